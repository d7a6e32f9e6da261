"""The charging rules in process (ocs.charging.inprocess): the engine's batch path without a
server, at pinned instants. Sessions, events, refusals, the last grant, a retransmission, and
money conserved across all of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import TARIFF

from balance import ops
from balance.money import to_micro
from balance.store import Tx
from ocs.billing import cdr as cdrs
from ocs.charging import sessions
from ocs.charging.inprocess import InProcessEngine
from protocol import constants as C
from protocol.cca import decode_cca
from protocol.ccr import encode_ccr
from protocol.records import CCA, CCR, MSCCRequest, Units

T0 = 1_760_000_000
OPENING = {"4901": "10", "4902": "1", "4903": "0", "4904": "0.035"}
INITIAL, UPDATE, TERMINATION, EVENT = (int(t) for t in C.CCRequestType)


def ccr(sid: str, rtype: int, number: int, who: str, mscc: list[MSCCRequest], **kw: object) -> CCR:
    return CCR(session_id=sid, origin_host="gw.test", origin_realm="test", destination_realm="test",
               auth_application_id=4, service_context_id="32251@3gpp.org", request_type=rtype,
               request_number=number, subscription_ids=[(C.SubscriptionIdType.END_USER_E164, who)],
               mscc=mscc, hop_by_hop=100 + number, end_to_end=200 + number, **kw)  # type: ignore[arg-type]


def voice(requested: int | None, used: int | None = None) -> list[MSCCRequest]:
    return [MSCCRequest(rating_group=100, requested=None if requested is None else Units(time=requested),
                        used=[] if used is None else [Units(time=used)])]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[InProcessEngine]:
    with InProcessEngine(tmp_path / "data", TARIFF) as eng:
        def provision(tx: Tx) -> None:
            for account_id, amount in OPENING.items():
                ops.create_account(tx, None, account_id=account_id, currency="EUR",
                                   balance=to_micro(amount))
        eng.store.execute(provision)
        yield eng


def send(engine: InProcessEngine, request: CCR, at: int) -> CCA:
    return decode_cca(engine.answer(request, now=T0 + at))


def balance(engine: InProcessEngine, account_id: str) -> int:
    with engine.store.read() as view:
        return view.get_account(account_id).balance


def money(engine: InProcessEngine) -> tuple[int, int, int, int]:
    """(balances, CDR amounts, charged in groups without a CDR yet, reserved) over all accounts."""
    with engine.store.read() as view:
        accounts = list(view.accounts())
        cdr_total = sum(c.amount for c in cdrs.iter_from(view.read_txn, view.dbs["cdrs"]))
        open_total = 0
        for key, raw in view.read_txn.cursor(db=view.dbs["sessions"]):
            sess = sessions.Session.unpack(bytes(key).decode(), raw)
            open_total += sum(g.amount for g in sess.groups.values() if not g.closed)
    return (sum(a.balance for a in accounts), cdr_total, open_total,
            sum(a.reserved for a in accounts))


def test_a_session_events_refusals_and_money_conserved(engine: InProcessEngine) -> None:
    opening = sum(to_micro(v) for v in OPENING.values())
    a = send(engine, ccr("v;1", INITIAL, 0, "4901", voice(120)), 0)
    assert a.result_code == C.DIAMETER_SUCCESS and a.mscc[0].granted.time == 120  # type: ignore[union-attr]
    assert a.mscc[0].final_unit_action is None
    a = send(engine, ccr("v;1", UPDATE, 1, "4901", voice(60, used=45)), 45)
    assert a.result_code == C.DIAMETER_SUCCESS
    assert balance(engine, "4901") == to_micro("10") - to_micro("0.01")

    # a retransmission: the first answer byte for byte, nothing charged twice
    again = ccr("v;1", UPDATE, 1, "4901", voice(60, used=45))
    first = engine.answer(again, now=T0 + 46)
    assert engine.answer(again, now=T0 + 47) == first
    assert engine.answer(encode_ccr(again, 100 + 1, 200 + 1, retransmit=True), now=T0 + 48)[20:] == first[20:]
    assert balance(engine, "4901") == to_micro("10") - to_micro("0.01")

    # an EVENT: two SMS at 0.05, debited at once
    a = send(engine, ccr("e;1", EVENT, 0, "4902", [MSCCRequest(
        rating_group=300, requested=Units(service_specific_units=2))],
        requested_action=C.RequestedAction.DIRECT_DEBITING), 50)
    assert a.result_code == C.DIAMETER_SUCCESS
    assert a.cost_information is not None and a.cost_information.value_digits == to_micro("0.1")
    assert balance(engine, "4902") == to_micro("0.9")

    # nothing on the balance: 4012
    a = send(engine, ccr("z;1", INITIAL, 0, "4903", voice(60)), 60)
    assert a.result_code == C.DIAMETER_CREDIT_LIMIT_REACHED
    assert a.mscc[0].result_code == C.DIAMETER_CREDIT_LIMIT_REACHED

    # the last grant the balance allows carries Final-Unit-Indication
    a = send(engine, ccr("l;1", INITIAL, 0, "4904", voice(600)), 70)
    assert a.result_code == C.DIAMETER_SUCCESS and a.mscc[0].granted.time == 180  # type: ignore[union-attr]
    assert a.mscc[0].final_unit_action == C.FinalUnitAction.TERMINATE

    engine.store.execute(lambda tx: ops.topup(tx, None, "4903", to_micro("2")))
    topups = to_micro("2")
    a = send(engine, ccr("z;1", INITIAL, 1, "4903", voice(60)), 80)  # the retry after the top-up
    assert a.result_code == C.DIAMETER_SUCCESS

    balances, in_cdrs, in_open, reserved = money(engine)
    assert balances + in_cdrs + in_open == opening + topups
    assert reserved == to_micro("0.01") + to_micro("0.03") + to_micro("0.01")  # v;1, l;1, z;1 hold

    for request, at in [(ccr("v;1", TERMINATION, 2, "4901", voice(None, used=130)), 200),
                        (ccr("l;1", TERMINATION, 1, "4904", voice(None, used=200)), 280),
                        (ccr("z;1", TERMINATION, 2, "4903", voice(None, used=10)), 90)]:
        assert send(engine, request, at).result_code == C.DIAMETER_SUCCESS
    assert balance(engine, "4901") == to_micro("10") - to_micro("0.03")  # 45 + 130 s: 3 minutes
    balances, in_cdrs, in_open, reserved = money(engine)
    assert (in_open, reserved) == (0, 0)
    assert balances + in_cdrs == opening + topups
    assert balance(engine, "4904") == 0  # 200 s used of a 180 s grant: what was left, no more


def test_a_batch_runs_in_one_transaction_and_a_bad_frame_is_answered(engine: InProcessEngine) -> None:
    good = ccr("b;1", INITIAL, 0, "4901", voice(60))
    bad = encode_ccr(good, 7, 8)[:-4]  # cut short inside the last AVP
    answers = engine.batch([good, bad, ccr("b;2", INITIAL, 0, "4999", voice(60))], now=T0)
    assert [decode_cca(x).result_code for x in answers[::2]] == [
        C.DIAMETER_SUCCESS, C.DIAMETER_USER_UNKNOWN]
    assert answers[1][12:20] == bad[12:20]  # the broken frame's own ids
    assert engine.writer.stats.batches == 1 and engine.writer.stats.isolated == 0
    with engine.store.read() as view:
        raw = view.read_txn.get(b"b;1", db=view.dbs["sessions"])
    assert raw is not None and sessions.Session.unpack("b;1", raw).account_id == "4901"
