"""The batch scanner of CCR frames for the engine's fast path: one numba call reads a whole batch.

decode_ccr costs about 12 us per CCR-U, most of it Python objects (engine-measurements.md); a
batch scanner that writes plain integers into one int64 row per frame measured 3-4x less in the
prototypes. It reads the common shapes only: CCR-I/U/T/EVENT with up to MAX_MSCC MSCCs (Rating-
Group, one Service-Identifier, Reporting-Reason, an RSU and one USU of time/volume/events), up to
MAX_SUBS Subscription-Ids, and the usual single-valued AVPs. A frame it does not take EXACTLY as
decode_ccr would (any error, or anything it does not model: CC-Money, a top-level RSU/USU,
Subscription-Id-Extension, non-ASCII text, octet counts >= 2**63, a grouped AVP inside an MSCC,
...) gets OK = 0 and goes to decode_ccr, which stays the reference and makes every error answer.
So the scanner never builds an error: it has only to be sure when it says yes, and the
differential test (tests/protocol/test_ccr_batch.py) holds it to decode_ccr on valid and mutated
frames.

Row layout (int64; -1 = absent, every accepted value is >= 0): the F_* and M_* indexes below. Text
AVPs are (offset, length) into the frame; MSCC k's fields start at F_MSCC + k * M_WIDTH.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from protocol import constants as C
from protocol import dictionary as D
from protocol.formats import ntp_to_unix
from protocol.header import FLAG_RETRANSMIT
from protocol.records import CCR, MSCCRequest, Units

MAX_MSCC: Final = 4
MAX_SUBS: Final = 2

F_OK, F_HBH, F_E2E, F_RETRANSMIT = 0, 1, 2, 3
# Text slots in decode_ccr's order; slot s has its offset at F_TEXT + 2s and its length after it.
TEXT_NAMES: Final = ("Session-Id", "Origin-Host", "Origin-Realm", "Destination-Realm",
                     "Destination-Host", "Service-Context-Id", "User-Name")
F_TEXT: Final = 4
# Unsigned32 / Enumerated / Time slots; slot i at F_INT + i.
INT_NAMES: Final = ("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number", "Requested-Action",
                    "Event-Timestamp", "Origin-State-Id", "Termination-Cause",
                    "Multiple-Services-Indicator", "Service-Identifier")
F_INT: Final = F_TEXT + 2 * len(TEXT_NAMES)
F_NSUB: Final = F_INT + len(INT_NAMES)
F_SUB: Final = F_NSUB + 1            # per Subscription-Id: type, offset, length
F_NMSCC: Final = F_SUB + 3 * MAX_SUBS
F_MSCC: Final = F_NMSCC + 1
# Per MSCC: flags M_RSU / M_USU (0 or 1), each followed by UNIT_SLOTS values: time, total, input,
# output, service-specific octets/units, Reporting-Reason, Tariff-Change-Usage (the last two only
# in a USU: an RSU with them is not taken).
UNIT_SLOTS: Final = 7
M_RG, M_SID, M_RR, M_RSU, M_RSU_UNITS = 0, 1, 2, 3, 4
M_USU: Final = M_RSU_UNITS + UNIT_SLOTS
M_USU_UNITS: Final = M_USU + 1
M_USU_RR: Final = M_USU_UNITS + 5
M_USU_TCU: Final = M_USU_RR + 1
M_WIDTH: Final = M_USU_UNITS + UNIT_SLOTS
WIDTH: Final = F_MSCC + MAX_MSCC * M_WIDTH

Int = int | np.int64  # what the kernels compute with (numba types both as int64)
_RR_KEY = 872 | (C.VENDOR_3GPP << 32)


def _mask(name: str) -> int:
    """The Enumerated's values as a bit mask (all of ours are 0..63)."""
    values = D.by_name(name).values or frozenset()
    assert all(0 <= v < 63 for v in values), name
    return sum(1 << v for v in values)


def _tables() -> tuple[npt.NDArray[np.int64], ...]:
    """The dictionary's rules as arrays for the kernel: no second copy of any table."""
    keys = np.array([D.by_name(n).key for n in TEXT_NAMES + INT_NAMES], dtype=np.int64)
    text_max = np.array([D.by_name(n).max_len for n in TEXT_NAMES], dtype=np.int64)
    text_nul = np.array([D.by_name(n).nul_ok and D.by_name(n).type != "DiameterIdentity"
                         for n in TEXT_NAMES], dtype=np.int64)
    assert all(D.by_name(n).min_len == 1 for n in TEXT_NAMES)
    # per int slot: 0 = any Unsigned32, else the Enumerated's mask
    enum = np.array([_mask(n) if D.by_name(n).type == "Enumerated" else 0 for n in INT_NAMES],
                    dtype=np.int64)
    sub = []  # per Subscription-Id-Type: the bounds of its Extension member (as decode_ccr)
    for t, key in enumerate(range(660, 665)):  # Subscription-Id-E164 ... -Private, type 0 ... 4
        d = D.BY_KEY[key]
        sub.append((t, d.min_len, d.max_len, int(d.nul_ok)))
    sub_rules = np.array(sub, dtype=np.int64)
    misc = np.array([_mask("Subscription-Id-Type"), _mask("Reporting-Reason"),
                     _mask("Tariff-Change-Usage")], dtype=np.int64)
    known = np.array(sorted(D.KNOWN_KEYS), dtype=np.int64)
    grouped = np.array(sorted(D.GROUPED_KEYS), dtype=np.int64)
    return keys, text_max, text_nul, enum, sub_rules, misc, known, grouped


_KEYS, _TEXT_MAX, _TEXT_NUL, _ENUM, _SUB_RULES, _MISC, _KNOWN, _GROUPED = _tables()


@njit(cache=True, inline="always")
def _u32(b: npt.NDArray[np.uint8], p: Int) -> np.int64:
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@njit(cache=True, inline="always")
def _in(sorted_keys: npt.NDArray[np.int64], key: Int) -> bool | np.bool_:
    i = np.searchsorted(sorted_keys, key)
    return i < sorted_keys.size and sorted_keys[i] == key


@njit(cache=True, inline="always")
def _avp(b: npt.NDArray[np.uint8], p: Int, end: Int) -> tuple[Int, Int, Int, Int]:
    """(key, data start, data end, flags byte) of the AVP at p, or key -1 if it is malformed."""
    if end - p < 8:
        return -1, 0, 0, 0
    code = _u32(b, p)
    fl = np.int64(b[p + 4])
    e = p + ((np.int64(b[p + 5]) << 16) | (np.int64(b[p + 6]) << 8) | np.int64(b[p + 7]))
    if fl & 0x1F:
        return -1, 0, 0, 0
    if fl & 0x80:
        d = p + 12
        if e < d or e > end:
            return -1, 0, 0, 0
        vendor = _u32(b, p + 8)
        if vendor >= 0x80000000:
            return -1, 0, 0, 0
        return code | (vendor << 32), d, e, fl
    d = p + 8
    if e < d or e > end:
        return -1, 0, 0, 0
    return code, d, e, fl


@njit(cache=True, inline="always")
def _ascii(b: npt.NDArray[np.uint8], d: Int, e: Int, nul_ok: bool) -> bool:
    for i in range(d, e):
        c = b[i]
        if c >= 0x80 or (c == 0 and not nul_ok):
            return False
    return True


@njit(cache=True)
def _units(b: npt.NDArray[np.uint8], d: Int, end: Int, row: npt.NDArray[np.int64], at: Int,
           misc: npt.NDArray[np.int64], known: npt.NDArray[np.int64],
           grouped: npt.NDArray[np.int64]) -> bool:
    """RSU/USU payload into row[at:at+UNIT_SLOTS]."""
    for j in range(UNIT_SLOTS):
        row[at + j] = -1
    p = d
    while p < end:
        key, dd, e, fl = _avp(b, p, end)
        if key < 0:
            return False
        slot = -1
        if key == 420:
            slot = 0
        elif key == 421:
            slot = 1
        elif key == 412:
            slot = 2
        elif key == 414:
            slot = 3
        elif key == 417:
            slot = 4
        elif key == _RR_KEY:
            slot = 5
        elif key == 452:
            slot = 6
        if slot >= 0:
            if row[at + slot] >= 0:
                return False  # twice: decode_ccr refuses it
            if slot == 0 or slot >= 5:
                if e - dd != 4:
                    return False
                x = _u32(b, dd)
                if slot >= 5:
                    m = misc[1] if slot == 5 else misc[2]
                    if x >= 63 or not (m >> x) & 1:
                        return False
                row[at + slot] = x
            else:
                if e - dd != 8 or b[dd] >= 0x80:
                    return False  # wrong size, or >= 2**63 (int64 cannot hold it)
                row[at + slot] = (_u32(b, dd) << 32) | _u32(b, dd + 4)
        elif key == 413 or _in(grouped, key):
            return False  # CC-Money, or a group decode_ccr would validate: the full decoder's job
        elif fl & 0x40 and not _in(known, key):
            return False
        p = (e + 3) & ~3
    return bool(p <= end)


@njit(cache=True)
def _mscc(b: npt.NDArray[np.uint8], d: Int, end: Int, row: npt.NDArray[np.int64], at: Int,
          misc: npt.NDArray[np.int64], known: npt.NDArray[np.int64],
          grouped: npt.NDArray[np.int64]) -> bool:
    for j in range(M_WIDTH):
        row[at + j] = -1
    row[at + M_RSU] = 0
    row[at + M_USU] = 0
    p = d
    while p < end:
        key, dd, e, fl = _avp(b, p, end)
        if key < 0:
            return False
        if key == 437 or key == 446:
            flag = at + (M_RSU if key == 437 else M_USU)
            if row[flag]:
                return False  # a second RSU is an error; a second USU is not modelled
            row[flag] = 1
            if not _units(b, dd, e, row, flag + 1, misc, known, grouped):
                return False
            if key == 437 and (row[at + M_RSU_UNITS + 5] >= 0 or row[at + M_RSU_UNITS + 6] >= 0):
                return False  # Reporting-Reason / Tariff-Change-Usage inside an RSU: not modelled
        elif key == 432 or key == 439 or key == _RR_KEY:
            if e - dd != 4:
                return False
            x = _u32(b, dd)
            slot = at + (M_RG if key == 432 else M_SID if key == 439 else M_RR)
            if row[slot] >= 0:
                return False  # twice: an error (RG, RR) or several Service-Identifiers (not modelled)
            if key == _RR_KEY and (x >= 63 or not (misc[1] >> x) & 1):
                return False
            row[slot] = x
        elif _in(grouped, key) or (fl & 0x40 and not _in(known, key)):
            return False  # a group decode_ccr would validate, or an unknown AVP with the M bit
        p = (e + 3) & ~3
    return bool(p <= end)


@njit(cache=True)
def _subscription(b: npt.NDArray[np.uint8], d: Int, end: Int, row: npt.NDArray[np.int64], at: Int,
                  sub_rules: npt.NDArray[np.int64], misc: npt.NDArray[np.int64],
                  known: npt.NDArray[np.int64], grouped: npt.NDArray[np.int64]) -> bool:
    """Subscription-Id {Type} {Data} into row[at:at+3]."""
    typ: Int = -1
    off: Int = -1
    size: Int = -1
    p = d
    while p < end:
        key, dd, e, fl = _avp(b, p, end)
        if key < 0 or (fl & 0x40 and not _in(known, key)):
            return False
        if key == 450:
            if typ >= 0 or e - dd != 4:
                return False
            typ = _u32(b, dd)
            if typ >= 63 or not (misc[0] >> typ) & 1:
                return False
        elif key == 444:
            if off >= 0:
                return False
            off, size = dd, e - dd
        elif _in(grouped, key):
            return False
        p = (e + 3) & ~3
    if p > end or typ < 0 or off < 0:
        return False
    lo, hi, nul_ok = sub_rules[typ, 1], sub_rules[typ, 2], sub_rules[typ, 3]
    if size < lo or size > hi or not _ascii(b, off, off + size, nul_ok != 0):
        return False
    row[at], row[at + 1], row[at + 2] = typ, off, size
    return True


@njit(cache=True)
def _frame(b: npt.NDArray[np.uint8], n: Int, row: npt.NDArray[np.int64], strict: bool,
           keys: npt.NDArray[np.int64], text_max: npt.NDArray[np.int64],
           text_nul: npt.NDArray[np.int64], enum: npt.NDArray[np.int64],
           sub_rules: npt.NDArray[np.int64], misc: npt.NDArray[np.int64],
           known: npt.NDArray[np.int64], grouped: npt.NDArray[np.int64]) -> bool:
    ntext = text_max.size
    for j in range(1, WIDTH):  # every slot, so a row never holds another frame's leftovers
        row[j] = -1
    if n < 20 or _u32(b, 0) != (0x01000000 | n) or (b[4] & 0xAF) != 0x80:
        return False  # odd headers (E bit, a wrong length ...): decode_ccr decides
    if _u32(b, 4) & 0xFFFFFF != 272 or _u32(b, 8) != 4:
        return False
    row[F_HBH] = _u32(b, 12)
    row[F_E2E] = _u32(b, 16)
    row[F_RETRANSMIT] = 1 if b[4] & FLAG_RETRANSMIT else 0
    row[F_NSUB] = 0
    row[F_NMSCC] = 0
    p: Int = 20
    while p < n:
        key, d, e, fl = _avp(b, p, n)
        if key < 0:
            return False
        slot = -1
        for s in range(keys.size):
            if keys[s] == key:
                slot = s
                break
        if slot >= 0:
            if slot < ntext:
                at = F_TEXT + 2 * slot
                if row[at] >= 0 or e == d or e - d > text_max[slot]:
                    return False
                if not _ascii(b, d, e, text_nul[slot] != 0):
                    return False
                row[at], row[at + 1] = d, e - d
            else:
                at = F_INT + slot - ntext
                if row[at] >= 0 or e - d != 4:
                    return False
                x = _u32(b, d)
                m = enum[slot - ntext]
                if m and (x >= 63 or not (m >> x) & 1):
                    return False
                row[at] = x
        elif key == 456:
            k = row[F_NMSCC]
            if k >= MAX_MSCC or not _mscc(b, d, e, row, F_MSCC + k * M_WIDTH, misc, known, grouped):
                return False
            row[F_NMSCC] = k + 1
        elif key == 443:
            k = row[F_NSUB]
            if k >= MAX_SUBS or not _subscription(b, d, e, row, F_SUB + 3 * k, sub_rules, misc, known,
                                                  grouped):
                return False
            row[F_NSUB] = k + 1
        elif key == 659 or key == 437 or key == 446:
            return False  # Subscription-Id-Extension, top-level RSU/USU: not modelled
        elif _in(grouped, key):
            if strict:
                return False
        elif fl & 0x40 and not _in(known, key):
            return False
        p = (e + 3) & ~3
    # the mandatory ones (decode_ccr's _REQUIRED): Session-Id, Origin-Host/-Realm, Destination-Realm,
    # Service-Context-Id, then Auth-Application-Id, CC-Request-Type, CC-Request-Number
    if row[F_TEXT] < 0 or row[F_TEXT + 2] < 0 or row[F_TEXT + 4] < 0 or row[F_TEXT + 6] < 0:
        return False
    return not (row[F_TEXT + 10] < 0 or row[F_INT] < 0 or row[F_INT + 1] < 0 or row[F_INT + 2] < 0)


@njit(cache=True)
def _scan(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], out: npt.NDArray[np.int64],
          strict: bool, keys: npt.NDArray[np.int64], text_max: npt.NDArray[np.int64],
          text_nul: npt.NDArray[np.int64], enum: npt.NDArray[np.int64],
          sub_rules: npt.NDArray[np.int64], misc: npt.NDArray[np.int64],
          known: npt.NDArray[np.int64], grouped: npt.NDArray[np.int64]) -> int:
    taken = 0
    for i in range(out.shape[0]):
        s = starts[i]
        row = out[i]
        ok = _frame(buf[s:starts[i + 1]], starts[i + 1] - s, row, strict, keys, text_max, text_nul,
                    enum, sub_rules, misc, known, grouped)
        row[F_OK] = 1 if ok else 0
        taken += 1 if ok else 0
    return taken


def scan(frames: list[bytes], strict: bool = False) -> npt.NDArray[np.int64]:
    """One row per frame (WIDTH int64s); row[F_OK] == 1 where the frame is taken, else decode_ccr's.

    Offsets in a row are into that frame (not the batch buffer)."""
    starts = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum([len(f) for f in frames], out=starts[1:])
    buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
    out = np.empty((len(frames), WIDTH), dtype=np.int64)
    if frames:
        _scan(buf, starts, out, strict, _KEYS, _TEXT_MAX, _TEXT_NUL, _ENUM, _SUB_RULES, _MISC, _KNOWN,
              _GROUPED)
    return out


def _text(frame: bytes, row: npt.NDArray[np.int64], slot: int) -> str | None:
    off, size = int(row[F_TEXT + 2 * slot]), int(row[F_TEXT + 2 * slot + 1])
    return None if size < 0 else frame[off:off + size].decode("ascii")


def _opt(x: np.int64) -> int | None:
    return None if x < 0 else int(x)


def _unit_record(row: npt.NDArray[np.int64], at: int, used: bool) -> Units:
    u = Units(*(_opt(row[at + j]) for j in range(5)))
    if used:
        u.reporting_reason, u.tariff_change_usage = _opt(row[at + 5]), _opt(row[at + 6])
    return u


def to_ccr(frame: bytes, row: npt.NDArray[np.int64]) -> CCR:
    """The CCR record of a taken frame, equal to decode_ccr(frame) (the differential test's oracle
    side, and the general path's way in for a frame the scanner took)."""
    if not row[F_OK]:
        raise ValueError("the scanner did not take this frame: decode it with decode_ccr")
    ints = [_opt(row[F_INT + i]) for i in range(len(INT_NAMES))]
    auth, _type, _number, action, ts, state, cause, msi, service = ints
    subs = [(int(row[F_SUB + 3 * k]),
             frame[int(row[F_SUB + 3 * k + 1]):int(row[F_SUB + 3 * k + 1] + row[F_SUB + 3 * k + 2])]
             .decode("ascii")) for k in range(int(row[F_NSUB]))]
    mscc = []
    for k in range(int(row[F_NMSCC])):
        at = F_MSCC + k * M_WIDTH
        sid = _opt(row[at + M_SID])
        mscc.append(MSCCRequest(
            _opt(row[at + M_RG]), [] if sid is None else [sid],
            _unit_record(row, at + M_RSU_UNITS, False) if row[at + M_RSU] else None,
            [_unit_record(row, at + M_USU_UNITS, True)] if row[at + M_USU] else [],
            _opt(row[at + M_RR])))
    return CCR(
        _text(frame, row, 0) or "", _text(frame, row, 1) or "", _text(frame, row, 2) or "",
        _text(frame, row, 3) or "", _text(frame, row, 4), auth if auth is not None else 4,
        _text(frame, row, 5) or "", int(row[F_INT + 1]), int(row[F_INT + 2]), action,
        None if ts is None else ntp_to_unix(ts), subs, _text(frame, row, 6), state, cause, msi,
        service, None, [], mscc, int(row[F_HBH]), int(row[F_E2E]), bool(row[F_RETRANSMIT]))
