"""The ceiling: a uvloop server that frames requests and answers each with a canned message.

No decode, no rating, no store: per CCR it copies a pre-encoded CCA of the size ours sends and
patches the request's hop-by-hop and end-to-end ids in. What the bench measures against it is the
cost of Python + uvloop transport + our client on this machine; nothing built on top can be faster.

    python -m bench.echo_server --listen 127.0.0.1:0      # prints "OCS ready 127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import cast

from bench import wire

ORIGIN_HOST = "echo.bench"
ORIGIN_REALM = "bench"


def canned_answers(session_id_len: int = 40) -> dict[int, bytes]:
    """CEA, CCA, DWA, DPA by command code, encoded once with our codec."""
    from protocol.base import encode_cea, encode_dpa, encode_dwa
    from protocol.cca import encode_cca
    from protocol.records import CCA, CEA, DPA, DWA, MSCCAnswer, Units

    cea = CEA(origin_host=ORIGIN_HOST, origin_realm=ORIGIN_REALM,
              host_ip_addresses=["127.0.0.1"], vendor_id=0, product_name="ocs-echo",
              origin_state_id=1, supported_vendor_ids=[10415], auth_application_ids=[4],
              acct_application_ids=[], vendor_specific_application_ids=[],
              inband_security_ids=[], firmware_revision=1, result_code=2001,
              error_message=None, failed_avp=None)
    mscc = MSCCAnswer(result_code=2001, rating_group=200, service_identifier=None,
                      granted=Units(total_octets=10_000_000), validity_time=600,
                      quota_holding_time=None, time_quota_threshold=None,
                      volume_quota_threshold=None, final_unit_action=None,
                      redirect_address_type=None, redirect_server_address=None,
                      restriction_filter_rules=[], filter_ids=[])
    cca = CCA(session_id="x" * session_id_len, result_code=2001, origin_host=ORIGIN_HOST,
              origin_realm=ORIGIN_REALM, request_type=2, request_number=1, mscc=[mscc])
    return {
        wire.CMD_CER: encode_cea(cea, 0, 0),
        wire.CMD_CCR: encode_cca(cca, 0, 0),
        wire.CMD_DWR: encode_dwa(DWA(origin_host=ORIGIN_HOST, origin_realm=ORIGIN_REALM,
                                     origin_state_id=1, result_code=2001), 0, 0),
        wire.CMD_DPR: encode_dpa(DPA(origin_host=ORIGIN_HOST, origin_realm=ORIGIN_REALM,
                                     result_code=2001), 0, 0),
    }


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("answers", "buf", "transport")

    def __init__(self, answers: dict[int, bytes]) -> None:
        self.answers = answers
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection's transport

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None  # set by connection_made, which asyncio calls first
        buf = self.buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        answers = self.answers
        close = False
        while n - pos >= wire.HEADER_LEN:
            length = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            if length < wire.HEADER_LEN or length > 1 << 20:
                transport.close()
                return
            if n - pos < length:
                break
            command = (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]
            canned = answers.get(command)
            if canned is not None and buf[pos + 4] & wire.FLAG_REQUEST:
                answer = bytearray(canned)
                answer[12:20] = buf[pos + 12:pos + 20]      # hop-by-hop + end-to-end
                out.append(answer)
                close = close or command == wire.CMD_DPR
            pos += length
        del buf[:pos]
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    answers = canned_answers()
    server = await loop.create_server(lambda: EchoProtocol(answers), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"OCS ready {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 2)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 0),
                        metavar="HOST:PORT")
    args = parser.parse_args(argv)
    try:
        import uvloop
        uvloop.run(serve(*args.listen))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(*args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
