"""The batch CCA encoder for the engine's fast path: answers from int64 rows, one numba call per batch.

The counterpart of protocol.ccr_batch: the fast path's charging kernel fills one answer row per
request (the A_* and R_* indexes below), and this writes the CCAs byte for byte as
protocol.cca.encode_cca would for the same record (tests/protocol/test_cca_batch.py holds it to
that). The Session-Id, CC-Request-Type/-Number and the hop-by-hop / end-to-end ids come from the
request's scanned row; Origin-Host and Origin-Realm are one constant run of AVP bytes.

Modelled: Result-Code; up to MAX_MSCC MSCC answers with Granted-Service-Unit (time, total, input,
output, service-specific), Service-Identifier, Rating-Group, Validity-Time, Result-Code, a
Final-Unit-Indication with its action only (TERMINATE; REDIRECT and RESTRICT_ACCESS carry text:
the general path), Time/Volume-Quota-Threshold, Quota-Holding-Time; or the single-service form
(no MSCC in the request: the one grant, its Validity-Time and FUI at message level).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from protocol import build as B
from protocol import ccr_batch as Q
from protocol import constants as C
from protocol.records import CCA, MSCCAnswer

MAX_MSCC: Final = Q.MAX_MSCC
A_RESULT, A_SINGLE, A_NMSCC, A_MSCC = 0, 1, 2, 3
# Per MSCC answer; -1 = absent (R_GSU: 0 or 1, then the five units).
R_RESULT, R_RG, R_SID, R_GSU, R_GSU_UNITS = 0, 1, 2, 3, 4
R_VALIDITY: Final = R_GSU_UNITS + 5
R_QHT: Final = R_VALIDITY + 1
R_TQT: Final = R_QHT + 1
R_VQT: Final = R_TQT + 1
R_FUA: Final = R_VQT + 1
R_WIDTH: Final = R_FUA + 1
WIDTH: Final = A_MSCC + MAX_MSCC * R_WIDTH

_M, _VM, _P, _PE = 0x40, 0xC0, 0x40, 0x60  # AVP flags M / V+M; command flags P / P+E
_V3GPP = C.VENDOR_3GPP
_UNIT_CODES = np.array([420, 421, 412, 414, 417], dtype=np.int64)  # encode_units' order, no money
_UNIT_SIZES = np.array([4, 8, 8, 8, 8], dtype=np.int64)
Int = int | np.int64


@njit(cache=True, inline="always")
def _put32(out: npt.NDArray[np.uint8], q: Int, v: Int) -> None:
    out[q] = (v >> 24) & 0xFF
    out[q + 1] = (v >> 16) & 0xFF
    out[q + 2] = (v >> 8) & 0xFF
    out[q + 3] = v & 0xFF


@njit(cache=True, inline="always")
def _avp32(out: npt.NDArray[np.uint8], q: Int, code: Int, value: Int, vendor: bool) -> Int:
    """An Unsigned32/Integer32/Enumerated AVP (M, or V+M with the 3GPP vendor id) at q."""
    if vendor:
        _put32(out, q, code)
        _put32(out, q + 4, (_VM << 24) | 16)
        _put32(out, q + 8, _V3GPP)
        _put32(out, q + 12, value)
        return q + 16
    _put32(out, q, code)
    _put32(out, q + 4, (_M << 24) | 12)
    _put32(out, q + 8, value)
    return q + 12


@njit(cache=True, inline="always")
def _close_group(out: npt.NDArray[np.uint8], start: Int, q: Int, code: Int) -> None:
    _put32(out, start, code)
    _put32(out, start + 4, (_M << 24) | (q - start))


@njit(cache=True)
def _gsu(out: npt.NDArray[np.uint8], q: Int, a: npt.NDArray[np.int64], at: Int,
         codes: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64]) -> Int:
    start = q
    q += 8
    for j in range(5):
        v = a[at + j]
        if v >= 0:
            if sizes[j] == 4:
                q = _avp32(out, q, codes[j], v, False)
            else:
                _put32(out, q, codes[j])
                _put32(out, q + 4, (_M << 24) | 16)
                _put32(out, q + 8, v >> 32)
                _put32(out, q + 12, v & 0xFFFFFFFF)
                q += 16
    _close_group(out, start, q, 431)
    return q


@njit(cache=True)
def _fui(out: npt.NDArray[np.uint8], q: Int, action: Int) -> Int:
    start = q
    q = _avp32(out, q + 8, 449, action, False)
    _close_group(out, start, q, 430)
    return q


@njit(cache=True)
def _encode(req: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], rows: npt.NDArray[np.int64],
            answers: npt.NDArray[np.int64], origin: npt.NDArray[np.uint8],
            out: npt.NDArray[np.uint8], ends: npt.NDArray[np.int64],
            codes: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64]) -> None:
    q: Int = 0
    for i in range(answers.shape[0]):
        a, r = answers[i], rows[i]
        base = q
        q += 20
        # Session-Id, copied from the request with its padding zeroed
        off, size = starts[i] + r[Q.F_TEXT], r[Q.F_TEXT + 1]
        _put32(out, q, 263)
        _put32(out, q + 4, (_M << 24) | (8 + size))
        for j in range(size):
            out[q + 8 + j] = req[off + j]
        q += 8 + size
        while q & 3:
            out[q] = 0
            q += 1
        q = _avp32(out, q, 268, a[A_RESULT], False)
        for j in range(origin.size):
            out[q + j] = origin[j]
        q += origin.size
        q = _avp32(out, q, 258, 4, False)
        q = _avp32(out, q, 416, r[Q.F_INT + 1], False)
        q = _avp32(out, q, 415, r[Q.F_INT + 2], False)
        single = a[A_SINGLE] == 1
        for k in range(a[A_NMSCC]):
            m = A_MSCC + k * R_WIDTH
            if single:  # encode_cca's order for the message-level grant: GSU first, FUI, Validity last
                if a[m + R_GSU] == 1:
                    q = _gsu(out, q, a, m + R_GSU_UNITS, codes, sizes)
                continue
            start = q
            q += 8
            if a[m + R_GSU] == 1:
                q = _gsu(out, q, a, m + R_GSU_UNITS, codes, sizes)
            if a[m + R_SID] >= 0:
                q = _avp32(out, q, 439, a[m + R_SID], False)
            if a[m + R_RG] >= 0:
                q = _avp32(out, q, 432, a[m + R_RG], False)
            if a[m + R_VALIDITY] >= 0:
                q = _avp32(out, q, 448, a[m + R_VALIDITY], False)
            if a[m + R_RESULT] >= 0:
                q = _avp32(out, q, 268, a[m + R_RESULT], False)
            if a[m + R_FUA] >= 0:
                q = _fui(out, q, a[m + R_FUA])
            if a[m + R_TQT] >= 0:
                q = _avp32(out, q, 868, a[m + R_TQT], True)
            if a[m + R_VQT] >= 0:
                q = _avp32(out, q, 869, a[m + R_VQT], True)
            if a[m + R_QHT] >= 0:
                q = _avp32(out, q, 871, a[m + R_QHT], True)
            _close_group(out, start, q, 456)
        if single and a[A_NMSCC] == 1:
            if a[A_MSCC + R_FUA] >= 0:
                q = _fui(out, q, a[A_MSCC + R_FUA])
            if a[A_MSCC + R_VALIDITY] >= 0:
                q = _avp32(out, q, 448, a[A_MSCC + R_VALIDITY], False)
        rc = a[A_RESULT]
        _put32(out, base, 0x01000000 | (q - base))
        _put32(out, base + 4, ((_PE if 3000 <= rc < 4000 else _P) << 24) | 272)
        _put32(out, base + 8, 4)
        _put32(out, base + 12, r[Q.F_HBH])
        _put32(out, base + 16, r[Q.F_E2E])
        ends[i] = q


def origin_avps(origin_host: str, origin_realm: str) -> bytes:
    """The Origin-Host and Origin-Realm AVPs every answer carries (encode once, copy per answer)."""
    return B.utf8(264, origin_host) + B.utf8(296, origin_realm)


def encode(frames: list[bytes], rows: npt.NDArray[np.int64], answers: npt.NDArray[np.int64],
           origin: bytes) -> list[bytes]:
    """The CCAs of a batch: frames and rows as given to and returned by ccr_batch.scan, one answer
    row (WIDTH int64s) per request."""
    n = len(frames)
    if n == 0:
        return []
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(f) for f in frames], out=starts[1:])
    req = np.frombuffer(b"".join(frames), dtype=np.uint8)
    cap = int(starts[-1]) + n * (len(origin) + 64 + MAX_MSCC * 160 + 100)
    out = np.empty(cap, dtype=np.uint8)
    ends = np.empty(n, dtype=np.int64)
    _encode(req, starts, rows, answers, np.frombuffer(origin, dtype=np.uint8), out, ends,
            _UNIT_CODES, _UNIT_SIZES)
    data = out.tobytes()
    result, prev = [], 0
    for e in ends.tolist():
        result.append(data[prev:e])
        prev = e
    return result


def answer_row(cca: CCA, single: bool) -> npt.NDArray[np.int64]:
    """The answer row of a CCA record of the modelled shape (what the kernel would write; the
    differential test's way to state an answer). Raises ValueError for an unmodelled one."""
    a = np.full(WIDTH, -1, dtype=np.int64)
    a[A_RESULT], a[A_SINGLE] = cca.result_code, int(single)
    grants: list[MSCCAnswer] = list(cca.mscc)
    if single:
        if cca.mscc:
            raise ValueError("a single-service answer has its grant at message level")
        fui = cca.final_unit
        grants = [MSCCAnswer(granted=cca.granted, validity_time=cca.validity_time,
                             final_unit_action=fui.final_unit_action if fui is not None else None)]
        if cca.granted is None and cca.validity_time is None and fui is None:
            grants = []
    if len(grants) > MAX_MSCC:
        raise ValueError("too many MSCCs")
    a[A_NMSCC] = len(grants)
    for k, m in enumerate(grants):
        at = A_MSCC + k * R_WIDTH
        if m.redirect_server_address is not None or m.restriction_filter_rules or m.filter_ids:
            raise ValueError("a Final-Unit-Indication with text is the general path's")
        for slot, v in ((R_RESULT, m.result_code), (R_RG, m.rating_group), (R_SID, m.service_identifier),
                        (R_VALIDITY, m.validity_time), (R_QHT, m.quota_holding_time),
                        (R_TQT, m.time_quota_threshold), (R_VQT, m.volume_quota_threshold),
                        (R_FUA, m.final_unit_action)):
            a[at + slot] = -1 if v is None else v
        a[at + R_GSU] = 0 if m.granted is None else 1
        if m.granted is not None:
            g = m.granted
            if g.money_value_digits is not None or g.reporting_reason is not None \
                    or g.tariff_change_usage is not None:
                raise ValueError("a grant of money or with report fields is the general path's")
            for j, v in enumerate((g.time, g.total_octets, g.input_octets, g.output_octets,
                                   g.service_specific_units)):
                a[at + R_GSU_UNITS + j] = -1 if v is None else v
    return a

