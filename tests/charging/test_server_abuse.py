"""Requests crafted to get service for free or to be charged twice, against the real server.

Each test is a way in that an adversarial review found (and that is now closed): refunds of money
never charged, two quotas behind one hold, parallel sessions each priced in the free tier, unit
values that overflow the kernel, a grant priced in a band that ends, an End-to-End id reused with
a new request number, a CC-Total-Octets smaller than input + output, and Session-Ids that do not
fit the store's keys.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from gy_requests import balance, ccr, connect, new_session_id
from server_harness import TARIFF, account, provision, start_server

from balance.money import to_micro
from protocol import constants as C
from protocol.cca import decode_cca
from protocol.ccr import encode_ccr
from protocol.message import decode_message
from protocol.records import CCR, MSCCRequest, Units

MIB = 1048576


BAND_EDGE: list[int] = []  # the instant the band starts (set with the tariff, read by the test)


def _band_soon() -> str:
    """A band from 10 to 20 minutes from now (UTC, every day): a grant now must end at its edge."""
    now = datetime.now(UTC)
    BAND_EDGE[:] = [int(now.timestamp()) // 60 * 60 + 600]
    a = (now.hour * 60 + now.minute + 10) % 1440
    b = (a + 10) % 1440
    return (f'[[rate.band]]\nname = "soon"\nfrom = "{a // 60:02d}:{a % 60:02d}"\n'
            f'to = "{b // 60:02d}:{b % 60:02d}"\nprice = "0.20"\n')


EXTRA = """
[[plan]]
name = "tiered"

[[rate]]
plan = "tiered"
rating_group = 200
unit = "octets"
price = "0"
increment = 1048576
[[rate.tier]]
from = 10485760
price = "0.10"

[[plan]]
name = "fee"

[[rate]]
plan = "fee"
rating_group = 100
unit = "seconds"
price = "0.01"
increment = 60
connect_fee = "0.50"

[[plan]]
name = "free"

[[rate]]
plan = "free"
rating_group = 200
unit = "octets"
price = "0"
increment = 1048576

[[plan]]
name = "banded"

[[rate]]
plan = "banded"
rating_group = 200
unit = "octets"
price = "0.01"
increment = 1048576
"""

ACCOUNTS = {
    "491720000001": {"balance": "1"},                                   # refunds
    "491720000002": {"balance": "1", "bundles": [{"unit": "events", "amount": 5,
                                                  "rating_groups": [300]}]},  # bundle-paid events
    "491720000003": {"balance": "0.025", "plan": "single"},             # no RG + RG 0
    "491720000004": {"balance": "10", "plan": "tiered"},                # parallel sessions, tiers
    "491720000005": {"balance": "10", "plan": "tiered"},                # absurd usage
    "491720000006": {"balance": "10", "plan": "banded"},                # band edge
    "491720000007": {"balance": "10"},                                  # End-to-End reuse
    "491720000008": {"balance": "10"},                                  # total vs input + output
    "491720000009": {"balance": "10"},                                  # long Session-Id
    "491720000010": {"balance": "0", "bundles": [{"unit": "events", "amount": 5,
                                                  "rating_groups": [300]}]},  # CHECK_BALANCE
    "491720000011": {"balance": "1", "bundles": [{"unit": "money", "amount": 1_000_000,
                                                  "rating_groups": [300]}]},  # money bundle
    "491720000012": {"balance": "1000", "currency": "JPY"},              # not the tariff's EUR
    "491720000013": {"balance": "10", "plan": "fee"},                     # connect fee once
    "491720000014": {"balance": "0.02"},                                  # exactly one grant
    "491720000015": {"balance": "10"},                                    # two services, one RG
    "491720000016": {"balance": "0", "plan": "free"},                     # free rate, no money
    "491720000017": {"balance": "0.70", "plan": "fee"},                   # fee paid, money left
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("abuse") / "data"
    provision(data, ACCOUNTS, TARIFF + EXTRA + _band_soon())
    srv = start_server(data)
    yield srv
    assert srv.stop() == 0, srv.log()


def event(msisdn: str, action: int | None, n: int) -> CCR:
    return ccr(new_session_id("pgw.abuse"), 4, 0, msisdn, [MSCCRequest(rating_group=300, requested=Units(service_specific_units=n))],
               requested_action=action)


async def test_refund_only_gives_back_money_events_took(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = "491720000001"
    r = await c.ccr(event(a, C.RequestedAction.REFUND_ACCOUNT, 1_000_000))  # nothing charged yet
    assert r.mscc[0].result_code == C.DIAMETER_UNABLE_TO_COMPLY and r.mscc[0].granted is None
    assert balance(server, a) == to_micro("1")
    assert (await c.ccr(event(a, None, 3))).result_code == 2001           # 0.15 debited
    assert (await c.ccr(event(a, C.RequestedAction.REFUND_ACCOUNT, 1))).result_code == 2001
    assert balance(server, a) == to_micro("0.90")
    r = await c.ccr(event(a, C.RequestedAction.REFUND_ACCOUNT, 3))         # only 2 left to refund
    assert r.result_code == C.DIAMETER_UNABLE_TO_COMPLY
    assert (await c.ccr(event(a, C.RequestedAction.REFUND_ACCOUNT, 2))).result_code == 2001
    assert balance(server, a) == to_micro("1")
    b = "491720000002"                                                     # a bundle paid these
    assert (await c.ccr(event(b, None, 3))).result_code == 2001
    assert balance(server, b) == to_micro("1")
    r = await c.ccr(event(b, C.RequestedAction.REFUND_ACCOUNT, 1))
    assert r.result_code == C.DIAMETER_UNABLE_TO_COMPLY and balance(server, b) == to_micro("1")
    await c.close()


async def test_no_rating_group_and_rating_group_zero_share_one_quota(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a, s = "491720000003", new_session_id("pgw.abuse")
    r = await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=None, service_identifiers=[1], requested=Units(time=600)),
                                     MSCCRequest(rating_group=0, service_identifiers=[2], requested=Units(time=600))]))
    granted = sum(m.granted.time for m in r.mscc if m.granted is not None)
    assert granted == 120                        # 0.025 at 0.01/min: two minutes in all, one hold
    assert account(server.data, a).reserved == to_micro("0.02")
    await c.close()


async def test_parallel_sessions_share_the_months_tiers(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = "491720000004"
    sids = [new_session_id("pgw.abuse") for _ in range(3)]             # three devices at once, 10 MiB each
    for s in sids:
        await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=200, requested=Units(total_octets=10 * MIB))]))
    for s in sids:
        await c.ccr(ccr(s, 3, 1, a, [MSCCRequest(rating_group=200, used=[Units(total_octets=10 * MIB)])]))
    assert balance(server, a) == to_micro("10") - to_micro("2")   # first 10 MiB free, 20 at 0.10
    await c.close()


async def test_absurd_unit_values_are_refused_not_priced(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a, s = "491720000005", new_session_id("pgw.abuse")
    await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))]))
    raw = await c.request_raw(encode_ccr(ccr(s, 2, 1, a, [MSCCRequest(
        rating_group=200, requested=Units(total_octets=MIB), used=[Units(total_octets=(1 << 63) - 1)])]),
        *c.next_ids()))
    r = decode_cca(raw)
    assert r.result_code == C.DIAMETER_INVALID_AVP_VALUE
    assert r.mscc[0].result_code == C.DIAMETER_INVALID_AVP_VALUE
    failed = decode_message(raw).find("Failed-AVP")
    assert failed is not None and failed.find("Used-Service-Unit") is not None
    await c.ccr(ccr(s, 3, 2, a, [MSCCRequest(rating_group=200, used=[Units(total_octets=MIB)])]))
    assert balance(server, a) == to_micro("10")                      # 1 MiB: still the free tier
    s2 = new_session_id("pgw.abuse")                                                       # the month counter still works
    r = await c.ccr(ccr(s2, 1, 0, a, [MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))]))
    assert r.result_code == 2001 and r.mscc[0].granted.total_octets == MIB
    await c.close()


async def test_grant_in_a_band_ends_at_the_band_edge(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = "491720000006"
    now = time.time()
    r = await c.ccr(ccr(new_session_id("pgw.abuse"), 1, 0, a, [MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))]))
    edge = BAND_EDGE[0]  # from the tariff's writing: a minute may have turned since (it did once)
    assert r.mscc[0].validity_time < 900
    assert abs(now + r.mscc[0].validity_time - edge) <= 3
    await c.close()


async def test_end_to_end_id_reused_with_a_new_number_is_charged(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a, s = "491720000007", new_session_id("pgw.abuse")
    await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=100, requested=Units(time=600))]))
    hbh, e2e = c.next_ids()
    u1 = ccr(s, 2, 1, a, [MSCCRequest(rating_group=100, requested=Units(time=600), used=[Units(time=60)])])
    await c.request_raw(encode_ccr(u1, hbh, e2e))
    u2 = ccr(s, 2, 2, a, [MSCCRequest(rating_group=100, requested=Units(time=600), used=[Units(time=540)])])
    r = decode_cca(await c.request_raw(encode_ccr(u2, hbh + 1, e2e)))
    assert r.request_number == 2
    again = decode_cca(await c.request_raw(encode_ccr(u2, hbh + 2, e2e)))   # a true retransmission
    assert again.request_number == 2
    await c.ccr(ccr(s, 3, 3, a, [MSCCRequest(rating_group=100, used=[Units(time=0)])]))
    assert balance(server, a) == to_micro("10") - to_micro("0.10")  # 600 s at 0.01/min, once
    await c.close()


async def test_total_octets_cannot_hide_input_and_output(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a, s = "491720000008", new_session_id("pgw.abuse")
    await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))]))
    await c.ccr(ccr(s, 3, 1, a, [MSCCRequest(rating_group=200, used=[Units(
        total_octets=0, input_octets=50 * MIB, output_octets=50 * MIB)])]))
    assert balance(server, a) == to_micro("10") - to_micro("1")     # 100 MiB at 0.01
    await c.close()


@pytest.mark.parametrize("session_id", ["pgw.abuse;" + "x" * 480, "pgw.abuse;nul\0inside;1"])
async def test_session_ids_that_do_not_fit_the_store_are_refused(server, session_id) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = "491720000009"
    before = account(server.data, a)
    raw = await c.request_raw(encode_ccr(ccr(session_id, 1, 0, a, [MSCCRequest(
        rating_group=100, requested=Units(time=60))]), *c.next_ids()))
    r = decode_cca(raw)
    assert r.result_code == C.DIAMETER_INVALID_AVP_VALUE and r.mscc == []
    failed = decode_message(raw).find("Failed-AVP")
    assert failed is not None and failed.find("Session-Id").value == session_id
    after = account(server.data, a)
    assert (after.reserved, after.seq) == (before.reserved, before.seq)  # nothing held or logged
    s = new_session_id("pgw.abuse")                                                        # the server goes on
    ok = await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    assert ok.result_code == 2001
    await c.ccr(ccr(s, 3, 1, a, [MSCCRequest(rating_group=100, used=[Units(time=60)])]))
    await c.close()


async def test_check_balance_counts_bundles(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = "491720000010"
    r = await c.ccr(event(a, C.RequestedAction.CHECK_BALANCE, 2))
    assert r.check_balance_result == C.CheckBalanceResult.ENOUGH_CREDIT
    r = await c.ccr(event(a, C.RequestedAction.CHECK_BALANCE, 6))
    assert r.check_balance_result == C.CheckBalanceResult.NO_CREDIT
    await c.close()


async def test_money_bundle_is_not_turned_into_cash(server) -> None:  # type: ignore[no-untyped-def]
    """What a money bundle (promotional credit for one rating group) paid is not a cash charge:
    not in the CDR amount (reconcile and invoices follow the balance) and not refundable as cash."""
    from balance.store import open_store
    from ocs.billing import cdr as cdrs
    c = await connect(server)
    a = "491720000011"
    ev = event(a, None, 3)
    assert (await c.ccr(ev)).result_code == 2001                       # 0.15 from the bundle
    assert balance(server, a) == to_micro("1")
    r = await c.ccr(event(a, C.RequestedAction.REFUND_ACCOUNT, 3))
    assert r.result_code == C.DIAMETER_UNABLE_TO_COMPLY and balance(server, a) == to_micro("1")
    store = open_store(server.data)
    try:
        with store.read() as view:
            (cdr,) = cdrs.by_session(view.txn, view.dbs, ev.session_id)
            bundle = view.bundles(a)[0]
    finally:
        store.close()
    assert cdr.amount == 0 and bundle.remaining == to_micro("0.85")
    await c.close()


async def test_account_in_another_currency_than_the_tariff_is_not_rated(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = "491720000012"
    r = await c.ccr(ccr(new_session_id("pgw.abuse"), 1, 0, a, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    assert r.result_code == C.DIAMETER_RATING_FAILED and r.mscc[0].granted is None
    r = await c.ccr(event(a, None, 1))
    assert r.result_code == C.DIAMETER_RATING_FAILED
    assert balance(server, a) == to_micro("1000") and account(server.data, a).reserved == 0
    await c.close()


async def test_connect_fee_once_per_session_and_rating_group(server) -> None:  # type: ignore[no-untyped-def]
    """A burst after FINAL gets its own CDR and cumulative count, not a second connect fee."""
    c = await connect(server)
    a, s = "491720000013", new_session_id("pgw.abuse")
    final = C.ReportingReason.FINAL
    await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    await c.ccr(ccr(s, 2, 1, a, [MSCCRequest(rating_group=100, used=[Units(time=30, reporting_reason=final)])]))
    r = await c.ccr(ccr(s, 2, 2, a, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    assert r.mscc[0].granted.time == 60
    await c.ccr(ccr(s, 3, 3, a, [MSCCRequest(rating_group=100, used=[Units(time=30)])]))
    assert balance(server, a) == to_micro("10") - to_micro("0.52")   # 0.50 + 0.01, then 0.01
    assert account(server.data, a).reserved == 0
    await c.close()


async def test_grant_that_takes_the_last_money_carries_fui(server) -> None:  # type: ignore[no-untyped-def]
    """0.02 left buys exactly the 120 s asked for: that grant is the last, so it says so (the next
    request would get 4012 without the gateway ever being told)."""
    c = await connect(server)
    r = await c.ccr(ccr(new_session_id("pgw.abuse"), 1, 0, "491720000014", [MSCCRequest(rating_group=100, requested=Units(time=120))]))
    m = r.mscc[0]
    assert m.granted.time == 120 and m.final_unit_action == C.FinalUnitAction.TERMINATE
    await c.close()


async def test_no_fui_while_another_grant_is_possible(server) -> None:  # type: ignore[no-untyped-def]
    """Not on a free rate with no money (every unit costs 0), nor when the connect fee made the
    first grant dear but money for the next minutes is left (0.70 - 0.51 = 0.19)."""
    c = await connect(server)
    r = await c.ccr(ccr(new_session_id("pgw.abuse"), 1, 0, "491720000016", [MSCCRequest(rating_group=200, requested=Units(total_octets=10 * MIB))]))
    assert r.mscc[0].granted.total_octets == 10 * MIB and r.mscc[0].final_unit_action is None
    r = await c.ccr(ccr(new_session_id("pgw.abuse"), 1, 0, "491720000017", [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    assert r.mscc[0].granted.time == 60 and r.mscc[0].final_unit_action is None
    await c.close()


async def test_final_of_one_service_does_not_end_the_rating_groups_quota(server) -> None:  # type: ignore[no-untyped-def]
    """Two services share rating group 100: service 2 ends (FINAL) while service 1 reports and asks
    for more. Service 1 gets its quota; the usage of both is debited once."""
    from balance.store import open_store
    from ocs.billing import cdr as cdrs
    c = await connect(server)
    a, s = "491720000015", new_session_id("pgw.abuse")
    await c.ccr(ccr(s, 1, 0, a, [MSCCRequest(rating_group=100, service_identifiers=[1], requested=Units(time=120))]))
    r = await c.ccr(ccr(s, 2, 1, a, [
        MSCCRequest(rating_group=100, service_identifiers=[1], requested=Units(time=120),
                    used=[Units(time=60, reporting_reason=C.ReportingReason.QUOTA_EXHAUSTED)]),
        MSCCRequest(rating_group=100, service_identifiers=[2],
                    used=[Units(time=60, reporting_reason=C.ReportingReason.FINAL)])]))
    assert r.mscc[0].granted is not None and r.mscc[0].granted.time == 120
    assert balance(server, a) == to_micro("10") - to_micro("0.02")      # 120 s reported in all
    store = open_store(server.data)
    try:
        with store.read() as view:
            assert cdrs.by_session(view.txn, view.dbs, s) == []          # the group is still open
    finally:
        store.close()
    await c.ccr(ccr(s, 3, 2, a, [MSCCRequest(rating_group=100, service_identifiers=[1], used=[Units(time=60)])]))
    assert balance(server, a) == to_micro("10") - to_micro("0.03")
    assert account(server.data, a).reserved == 0
    await c.close()
