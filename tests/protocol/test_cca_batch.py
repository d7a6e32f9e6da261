"""The batch CCA encoder against protocol.cca.encode_cca: byte-identical answers for every modelled shape."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cca_batch as E
from protocol import ccr_batch as Q
from protocol.cca import decode_cca, encode_cca
from protocol.ccr import encode_ccr
from protocol.records import CCA, CCR, FinalUnit, MSCCAnswer, MSCCRequest, Units

HOST, REALM = "ocs.operator.example", "operator.example"
U32 = st.integers(0, 2**32 - 1)
opt32, opt63 = st.none() | U32, st.none() | st.integers(0, 2**63 - 1)
GRANT = st.builds(Units, time=opt32, total_octets=opt63, input_octets=opt63, output_octets=opt63,
                  service_specific_units=opt63)
ANSWER = st.builds(MSCCAnswer, result_code=st.none() | st.sampled_from([2001, 4012, 4010, 5030, 3004]),
                   rating_group=opt32, service_identifier=opt32, granted=st.none() | GRANT,
                   validity_time=opt32, quota_holding_time=opt32, time_quota_threshold=opt32,
                   volume_quota_threshold=opt32, final_unit_action=st.none() | st.integers(0, 2))
SESSION = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, CCA, bool]:
    ccr = CCR(draw(SESSION), "pgw.test", "test", REALM, None, 4, "32251@3gpp.org",
              draw(st.integers(1, 4)), draw(U32),
              mscc=[MSCCRequest(1, [], Units(time=1), [])])
    frame = encode_ccr(ccr, draw(U32), draw(U32))
    single = draw(st.booleans())
    rc = draw(st.sampled_from([2001, 4012, 5030, 3004, 4010]))
    cca = CCA(ccr.session_id, rc, HOST, REALM, ccr.request_type, ccr.request_number)
    if single:
        m = draw(st.none() | ANSWER)
        if m is not None:
            cca.granted, cca.validity_time = m.granted, m.validity_time
            if m.final_unit_action is not None:
                cca.final_unit = FinalUnit(m.final_unit_action)
    else:
        cca.mscc = draw(st.lists(ANSWER, max_size=E.MAX_MSCC))
    return frame, cca, single


@settings(max_examples=500, deadline=None)
@given(cases())
def test_answers_are_byte_identical_to_encode_cca(case: tuple[bytes, CCA, bool]) -> None:
    frame, cca, single = case
    rows = Q.scan([frame])
    assert rows[0, Q.F_OK] == 1
    got = E.encode([frame], rows, E.answer_row(cca, single)[None, :], E.origin_avps(HOST, REALM))
    want = encode_cca(cca, int(rows[0, Q.F_HBH]), int(rows[0, Q.F_E2E]))
    assert got == [want]
    assert decode_cca(got[0]).result_code == cca.result_code


def test_a_batch_of_mixed_answers() -> None:
    frames, ccas = [], []
    for i in range(40):
        ccr = CCR(f"pgw.test;1;{i}" + "x" * (i % 5), "pgw.test", "test", REALM, None, 4, "c", 2, i,
                  mscc=[MSCCRequest(i, [], Units(total_octets=1000), [])])
        frames.append(encode_ccr(ccr, 1000 + i, 2000 + i))
        m = [MSCCAnswer(2001, i, None, Units(total_octets=i * 1000), 900,
                        final_unit_action=0 if i % 3 == 0 else None)] * (i % 5)
        ccas.append(CCA(ccr.session_id, 2001 if i % 7 else 4012, HOST, REALM, 2, i, mscc=m))
    rows = Q.scan(frames)
    answers = np.stack([E.answer_row(c, False) for c in ccas])
    got = E.encode(frames, rows, answers, E.origin_avps(HOST, REALM))
    assert got == [encode_cca(c, 1000 + i, 2000 + i) for i, c in enumerate(ccas)]
    assert E.encode([], rows[:0], answers[:0], b"") == []
