"""Template patching yields CCRs our codec decodes to the intended values; the client's answer
scan reads what our codec encoded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import wire
from bench.templates import SESSION_TAIL_WIDTH, make_templates, new_run_id, session_tail
from bench.workload import (
    EVENT,
    INITIAL,
    SERVICES,
    TERMINATION,
    UPDATE,
    Mix,
    SessionPicker,
    account_id,
)
from protocol.cca import encode_cca
from protocol.ccr import decode_ccr
from protocol.records import CCA, MSCCAnswer, Units

HOST = "c0007.bench.client"
RUN = new_run_id()
TEMPLATES = make_templates(origin_host=HOST, origin_realm="bench", destination_realm="ocs",
                           run_id=RUN)

UNIT_FIELD = {"seconds": "time", "octets": "total_octets", "events": "service_specific_units"}


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(TEMPLATES)),
       hbh=st.integers(0, 2**32 - 1), e2e=st.integers(0, 2**32 - 1),
       conn=st.integers(0, 9999), number=st.integers(0, 2**31),
       acct=st.integers(0, 10**8 - 1), req_no=st.integers(0, 2**32 - 1),
       used=st.integers(0, 2**32 - 1))
def test_rendered_ccr_decodes_to_the_intended_values(key, hbh, e2e, conn, number, acct, req_no,
                                                     used):
    name, kind = key
    service = SERVICES[name]
    tail = session_tail(conn, number)
    assert len(tail) == SESSION_TAIL_WIDTH
    frame = bytes(TEMPLATES[key].render(hbh, e2e, tail, req_no, account_id(acct).encode(), used))
    ccr = decode_ccr(frame)
    assert (ccr.hop_by_hop, ccr.end_to_end) == (hbh, e2e)
    assert ccr.session_id == f"{HOST};{conn:010d};{number:010d};{RUN}"
    assert ccr.origin_host == HOST and ccr.destination_realm == "ocs"
    assert ccr.request_type == kind and ccr.request_number == req_no
    assert ccr.subscription_ids == [(0, account_id(acct))]
    assert ccr.service_context_id == service.context_id
    [mscc] = ccr.mscc
    assert mscc.rating_group == service.rating_group
    field = UNIT_FIELD[service.unit]
    if kind in (UPDATE, TERMINATION):
        [usu] = mscc.used
        assert getattr(usu, field) == used
    else:
        assert mscc.used == []
    if kind == TERMINATION:
        assert mscc.requested is None and ccr.termination_cause == 1
    else:
        assert getattr(mscc.requested, field) == service.requested
    assert ccr.requested_action == (0 if kind == EVENT else None)


def test_run_ids_are_fresh_and_only_letters_or_digits():
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 8 and int(i, 16) >= 0 for i in ids)
    plain = make_templates(origin_host=HOST, origin_realm="bench", destination_realm="ocs")
    frame = bytes(plain[("sms", EVENT)].render(1, 1, session_tail(3, 4), 0, b"491700000000", 1))
    assert decode_ccr(frame).session_id == f"{HOST};0000000003;0000000004"
    for bad in ("a;b", "x" * 33, "é"):
        with pytest.raises(ValueError, match="run id"):
            make_templates(origin_host=HOST, origin_realm="bench", destination_realm="ocs",
                           run_id=bad)


def test_every_service_has_its_request_kinds():
    assert set(TEMPLATES) == {("data", INITIAL), ("data", UPDATE), ("data", TERMINATION),
                              ("voice", INITIAL), ("voice", UPDATE), ("voice", TERMINATION),
                              ("sms", EVENT)}
    # a render never touches the template itself
    before = TEMPLATES[("data", UPDATE)].frame
    TEMPLATES[("data", UPDATE)].render(1, 2, session_tail(1, 2), 3, b"491799999999", 4)
    assert TEMPLATES[("data", UPDATE)].frame == before


units_st = st.one_of(
    st.none(),
    st.builds(Units, time=st.integers(0, 2**32 - 1)),
    st.builds(Units, total_octets=st.integers(0, 2**64 - 1)),
    st.builds(Units, service_specific_units=st.integers(0, 2**64 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(result=st.sampled_from([2001, 4012, 5030, 5031, 5002]),
       msccs=st.lists(st.tuples(st.sampled_from([None, 2001, 4012, 5031]), units_st,
                                st.one_of(st.none(), st.integers(0, 2**32 - 1))), max_size=3),
       hbh=st.integers(0, 2**32 - 1))
def test_scan_answer_reads_what_encode_cca_wrote(result, msccs, hbh):
    cca = CCA(session_id="s;1;2", result_code=result, origin_host="ocs", origin_realm="ocs",
              request_type=2, request_number=1,
              mscc=[MSCCAnswer(result_code=rc, rating_group=200, granted=g, validity_time=vt)
                    for rc, g, vt in msccs])
    frame = encode_cca(cca, hbh, hbh)
    got = wire.scan_answer(frame)
    want_mscc = (0, -1)
    if msccs:
        rc, g, _vt = msccs[0]
        granted = -1 if g is None else (g.time if g.time is not None else
                                        g.total_octets if g.total_octets is not None else
                                        g.service_specific_units)
        want_mscc = (rc or 0, granted)
    assert got == (result, *want_mscc)
    assert wire.frame_length(frame) == len(frame)


def test_split_frames_handles_partial_and_multiple_frames():
    a = bytes(TEMPLATES[("data", INITIAL)].frame)
    b = bytes(TEMPLATES[("sms", EVENT)].frame)
    buf = bytearray(a + b[:30])
    assert wire.split_frames(buf) == [a]
    assert bytes(buf) == b[:30]
    buf += b[30:] + a
    assert wire.split_frames(buf) == [b, a]
    assert buf == bytearray()


def test_session_picker_is_seeded_and_follows_the_mix():
    mix = Mix(data=1, voice=0, sms=0, data_updates=3)
    a, b = SessionPicker(mix, 50, seed=9), SessionPicker(mix, 50, seed=9)
    draws = [(a.service().name, a.account(), a.usage(SERVICES["data"])) for _ in range(100)]
    assert draws == [(b.service().name, b.account(), b.usage(SERVICES["data"]))
                     for _ in range(100)]
    assert {d[0] for d in draws} == {"data"} and all(0 <= d[1] < 50 for d in draws)
    assert Mix.parse("data=1,voice=0,sms=0,data_updates=3") == mix
    assert mix.requests_per_session() == 5
