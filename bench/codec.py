"""Codec micro-benchmark: flat-scan CCR-U decode and template CCA encode vs the generic AVP tree.

    python -m bench.codec [--runs 7] [--number 20000]

Prints µs per message (median of runs) and the fast/generic ratio measured in the same run.
Targets on the reference 2-vCPU machine: decode CCR-U <= 12 µs, encode CCA <= 6 µs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from protocol import build as B
from protocol.avp import Avp, make
from protocol.cca import encode_cca
from protocol.ccr import decode_ccr, encode_ccr
from protocol.header import Header
from protocol.message import Message, decode_message, encode_message
from protocol.records import CCA, CCR, MSCCAnswer, MSCCRequest, Units


def typical_ccr_u() -> bytes:
    """A Gy CCR-UPDATE as a PGW sends it: one MSCC (RSU + USU), Subscription-Id, PS-Information."""
    ps = b"".join([
        B.octets_3gpp(2, b"\x12\x34\x56\x78"), B.address_3gpp(1228, "192.0.2.10"),
        B.address_3gpp(847, "198.51.100.1"), B.octets_3gpp(21, b"\x06"),
        B.utf8(30, "internet.apn"), B.utf8_3gpp(8, "00101"),
    ])  # fmt: skip
    ccr = CCR("pgw1.operator.example;1700000000;42", "pgw1.operator.example", "operator.example",
              "ocs.operator.example", None, 4, "32251@3gpp.org", 2, 3,
              subscription_ids=[(0, "491700000001")],
              mscc=[MSCCRequest(32, [], Units(total_octets=10_000_000),
                                [Units(total_octets=7_340_032, reporting_reason=3)])])  # fmt: skip
    return encode_ccr(ccr, 0x1234, 0x5678, extra_avps=B.group_3gpp(873, B.group_3gpp(874, ps)))


def typical_cca() -> CCA:
    return CCA("pgw1.operator.example;1700000000;42", 2001, "ocs1.operator.example",
               "operator.example", 2, 3,
               mscc=[MSCCAnswer(2001, 32, None, Units(total_octets=10_000_000), 3600)])  # fmt: skip


def _value(parent: Message | Avp, name: str) -> Any:
    """The named child's value; a missing one is an error, as decode_ccr makes it."""
    a = parent.find(name)
    if a is None:
        raise LookupError(f"missing {name}")
    return a.value


def generic_decode(frame: bytes) -> dict[str, Any]:
    """The same work on the generic path: full tree, then the fields the record needs."""
    msg = decode_message(frame)
    mscc = [
        (_value(m, "Rating-Group"), m.find("Requested-Service-Unit"),
         [_value(u, "CC-Total-Octets") for u in m.find_all("Used-Service-Unit")])
        for m in msg.find_all("Multiple-Services-Credit-Control")
    ]  # fmt: skip
    return {
        "session_id": _value(msg, "Session-Id"),
        "origin_host": _value(msg, "Origin-Host"),
        "request_type": _value(msg, "CC-Request-Type"),
        "request_number": _value(msg, "CC-Request-Number"),
        "subs": [
            (_value(s, "Subscription-Id-Type"), _value(s, "Subscription-Id-Data"))
            for s in msg.find_all("Subscription-Id")
        ],
        "mscc": mscc,
    }


def generic_encode(cca: CCA, hbh: int, e2e: int) -> bytes:
    m = cca.mscc[0]
    if m.granted is None:
        raise ValueError("the benchmark's CCA grants units")
    gsu = make("Granted-Service-Unit", [make("CC-Total-Octets", m.granted.total_octets)])
    avps: list[Avp] = [
        make("Session-Id", cca.session_id), make("Result-Code", cca.result_code),
        make("Origin-Host", cca.origin_host), make("Origin-Realm", cca.origin_realm),
        make("Auth-Application-Id", 4), make("CC-Request-Type", cca.request_type),
        make("CC-Request-Number", cca.request_number),
        make("Multiple-Services-Credit-Control", [
            gsu, make("Rating-Group", m.rating_group), make("Validity-Time", m.validity_time),
            make("Result-Code", m.result_code)]),
    ]  # fmt: skip
    return encode_message(Message(Header(1, 0, 0x40, 272, 4, hbh, e2e), avps))


def per_call_us(fn: Callable[[], object], number: int, runs: int) -> tuple[float, float]:
    """(median, best) µs per call; the best run shows the floor when the machine is shared."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t) / number * 1e6)
    return statistics.median(samples), min(samples)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=20000)
    a = ap.parse_args(argv)
    frame, cca = typical_ccr_u(), typical_cca()
    assert decode_ccr(frame).mscc[0].used[0].total_octets == 7_340_032
    assert generic_decode(frame)["mscc"][0][2] == [7_340_032]
    print(f"CPU: {cpu_model()}  Python {platform.python_version()}")
    print(f"CCR-U {len(frame)} bytes, CCA {len(encode_cca(cca, 1, 2))} bytes; "
          f"median of {a.runs} runs x {a.number}")  # fmt: skip
    rows = [
        ("decode CCR-U", lambda: decode_ccr(frame), lambda: generic_decode(frame), 12.0),
        ("encode CCA", lambda: encode_cca(cca, 1, 2), lambda: generic_encode(cca, 1, 2), 6.0),
    ]
    for name, fast, generic, target in rows:
        (f_us, f_best), (g_us, g_best) = (
            per_call_us(fast, a.number, a.runs),
            per_call_us(generic, max(1, a.number // 4), a.runs),
        )
        verdict = "meets" if f_us <= target else "MISSES"
        print(f"{name:14s} fast {f_us:6.2f} µs (best {f_best:5.2f})   generic tree {g_us:6.2f} µs "
              f"(best {g_best:5.2f})   ratio {g_us / f_us:4.1f}x   target <= {target:.0f} µs: "
              f"{verdict}")  # fmt: skip
    strict, _ = per_call_us(lambda: decode_ccr(frame, strict=True), a.number, a.runs)
    print(f"decode CCR-U strict (validates skipped groups to any depth): {strict:6.2f} µs")


if __name__ == "__main__":
    main()
