"""One raw CCR frame through the charging rules: the batch op that applies it, and the answer bytes
from that op's outcome. Shared by the engine process (ocs.charging.engine) and the in-process
seam (ocs.charging.inprocess), so both apply and answer a request the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from balance.store import Tx
from ocs.charging import credit
from protocol import constants as C
from protocol.answer import encode_error_answer, with_proxy_info
from protocol.ccr import decode_ccr
from protocol.errors import DiameterError
from protocol.header import peek_header

log = logging.getLogger("ocs.engine")

Op = Callable[[Tx], bytes]


class Ready(bytes):
    """An answer complete as it is (an error answer already carrying the request's Proxy-Info)."""


def error_answer(frame: bytes, origin_host: str, origin_realm: str, code: int,
                 failed: bytes | None, message: str) -> bytes:
    return encode_error_answer(frame, peek_header(frame), code, origin_host, origin_realm,
                               failed, message)


def request_op(ctx: credit.Context, frame: bytes) -> Op:
    """The op for one frame in a write batch: credit.process of the decoded CCR; a frame that
    does not decode gets its error answer (Ready) and touches nothing."""
    cfg = ctx.cfg
    try:
        ccr = decode_ccr(frame)
    except DiameterError as exc:
        return partial(_const, value=Ready(error_answer(
            frame, cfg.origin_host, cfg.origin_realm, exc.result_code, exc.failed_avp, str(exc))))
    except Exception:  # a codec bug must cost this request, not the thread decoding it
        log.exception("decoding a request failed")
        return partial(_const, value=Ready(error_answer(
            frame, cfg.origin_host, cfg.origin_realm, C.DIAMETER_UNABLE_TO_COMPLY, None,
            "internal error")))
    return partial(credit.process, ctx=ctx, ccr=ccr)


def answer(frame: bytes, result: object, exc: BaseException | None, origin_host: str,
           origin_realm: str) -> bytes:
    """The answer to `frame` from its op's committed outcome (result or exception)."""
    if exc is not None:
        log.error("request failed: %r", exc)
        return error_answer(frame, origin_host, origin_realm, C.DIAMETER_UNABLE_TO_COMPLY, None,
                            "internal error")
    if isinstance(result, Ready):
        return bytes(result)
    if not isinstance(result, bytes):
        raise TypeError(f"a request's op answered {type(result).__name__}, not CCA bytes")
    raw = result
    ids = frame[12:20]
    if raw[12:20] != ids:  # a replay: this request's hop-by-hop and end-to-end ids
        raw = raw[:12] + ids + raw[20:]
    return with_proxy_info(raw, frame)


def _const(tx: Tx, value: bytes) -> bytes:
    return value
