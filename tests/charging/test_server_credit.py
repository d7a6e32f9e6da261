"""Credit control against the real server: exact balances, bundles, events, duplicates, limits."""

from __future__ import annotations

import asyncio

import pytest
from gy_requests import balance, ccr, connect, new_session_id
from server_harness import account, provision, start_server

from balance.money import to_micro
from protocol import constants as C
from protocol.records import CCR, MSCCRequest, Units

MIB = 1048576

ACCOUNTS = {
    "491700000001": {"balance": "10", "imsi": "262010000000001"},   # voice I/U/T
    "491700000002": {"balance": "10"},                              # two rating groups
    "491700000003": {"balance": "10", "bundles": [{"unit": "octets", "amount": 3 * MIB,
                                                    "rating_groups": [200]}]},
    "491700000004": {"balance": "1"},                               # events
    "491700000005": {"balance": "10"},                              # duplicates
    "491700000006": {"balance": "0.025"},                           # credit limit
    "491700000007": {"balance": "0.035"},                           # last grant + FUI
    "491700000008": {"balance": "5", "status": "suspended"},
    "491700000009": {"balance": "2"},                               # 200 concurrent sessions
    "491700000010": {"balance": "10"},                              # pipelined updates
    "491700000011": {"balance": "0.015", "plan": "redirecting"},    # FUI redirect
    "491700000012": {"balance": "10"},                              # unknown rating group
    "491700000013": {"balance": "10"},                              # suspended mid-session
    "491700000014": {"balance": "10"},                              # usage with no reservation
    "491700000015": {"balance": "10"},                              # late request number
    "491700000016": {"balance": "0.025"},                           # one rating group, two MSCCs
    "491700000017": {"balance": "10", "plan": "single"},            # single-service client
    "491700000018": {"balance": "10"},                              # Proxy-Info, zero-unit event
    "491700000019": {"balance": "0.025", "plan": "single"},         # single-service last grant
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("credit") / "data"
    provision(data, ACCOUNTS)
    srv = start_server(data)
    yield srv
    assert srv.stop() == 0, srv.log()


async def test_voice_session_exact_balance(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000001"
    a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=120))]))
    assert a.result_code == C.DIAMETER_SUCCESS
    assert a.mscc[0].result_code == C.DIAMETER_SUCCESS
    assert a.mscc[0].granted.time == 120 and a.mscc[0].validity_time == 900
    before = balance(server, acct)
    assert before == to_micro("10")  # nothing debited yet, only held
    assert account(server.data, acct).reserved == to_micro("0.02")
    # 45 s then 130 s: cumulative rating = 3 started minutes, not 1 + 3
    a = await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, requested=Units(),
                                                      used=[Units(time=45)])]))
    assert a.result_code == C.DIAMETER_SUCCESS and a.mscc[0].granted.time == 300
    assert balance(server, acct) == to_micro("10") - to_micro("0.01")
    a = await c.ccr(ccr(sid, 3, 2, acct, [MSCCRequest(rating_group=100, used=[Units(time=130)])]))
    assert a.result_code == C.DIAMETER_SUCCESS
    acc = account(server.data, acct)
    assert acc.balance == to_micro("10") - to_micro("0.03")
    assert acc.reserved == 0
    await c.close()


async def test_imsi_alias_resolves(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    req = CCR(session_id=new_session_id(), destination_realm="test", service_context_id="32260@3gpp.org",
              request_type=4, request_number=0,
              subscription_ids=[(C.SubscriptionIdType.END_USER_IMSI, "262010000000001")],
              requested_action=C.RequestedAction.PRICE_ENQUIRY,
              mscc=[MSCCRequest(rating_group=300, requested=Units(service_specific_units=2))])
    a = await c.ccr(req)
    assert a.result_code == C.DIAMETER_SUCCESS
    assert a.cost_information.value_digits * 10 ** (a.cost_information.exponent + 6) == to_micro("0.10")
    assert a.cost_information.currency_code == 978
    await c.close()


async def test_two_rating_groups_in_one_request(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000002"
    a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=60)),
                                          MSCCRequest(rating_group=200, requested=Units(total_octets=2 * MIB))]))
    assert [m.result_code for m in a.mscc] == [2001, 2001]
    assert {m.rating_group: (m.granted.time, m.granted.total_octets) for m in a.mscc} == {
        100: (60, None), 200: (None, 2 * MIB)}
    a = await c.ccr(ccr(sid, 3, 1, acct, [MSCCRequest(rating_group=100, used=[Units(time=61)]),
                                          MSCCRequest(rating_group=200, used=[Units(input_octets=MIB, output_octets=MIB // 2)])]))
    assert a.result_code == 2001
    # voice 61 s = 2 minutes = 0.02; data 1.5 MiB = 2 started MiB = 0.02
    assert balance(server, acct) == to_micro("10") - to_micro("0.04")
    await c.close()


async def test_bundle_consumed_before_money(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000003"
    a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=200, requested=Units(total_octets=2 * MIB))]))
    assert a.mscc[0].granted.total_octets == 2 * MIB
    assert account(server.data, acct).reserved == 0  # held on the bundle, not on money
    a = await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=200, requested=Units(total_octets=2 * MIB),
                                                      used=[Units(total_octets=2 * MIB)])]))
    assert balance(server, acct) == to_micro("10")  # still all on the bundle
    a = await c.ccr(ccr(sid, 3, 2, acct, [MSCCRequest(rating_group=200, used=[Units(total_octets=2 * MIB)])]))
    acc = account(server.data, acct)
    # 4 MiB used: 3 MiB from the bundle, 1 MiB paid: 0.01
    assert acc.balance == to_micro("10") - to_micro("0.01")
    await c.close()


async def test_event_direct_debit_refund_check_balance(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    acct = "491700000004"

    def event(action, n):  # type: ignore[no-untyped-def]
        return ccr(new_session_id(), 4, 0, acct, [MSCCRequest(rating_group=300, requested=Units(service_specific_units=n))],
                   requested_action=action)

    a = await c.ccr(event(None, 3))  # no Requested-Action = DIRECT_DEBITING
    assert a.result_code == 2001 and a.mscc[0].granted.service_specific_units == 3
    assert balance(server, acct) == to_micro("1") - to_micro("0.15")
    a = await c.ccr(event(C.RequestedAction.REFUND_ACCOUNT, 1))
    assert a.result_code == 2001
    assert balance(server, acct) == to_micro("1") - to_micro("0.10")
    a = await c.ccr(event(C.RequestedAction.CHECK_BALANCE, 18))
    assert a.check_balance_result == C.CheckBalanceResult.ENOUGH_CREDIT
    a = await c.ccr(event(C.RequestedAction.CHECK_BALANCE, 19))
    assert a.check_balance_result == C.CheckBalanceResult.NO_CREDIT
    a = await c.ccr(event(C.RequestedAction.DIRECT_DEBITING, 19))  # 0.95 > 0.90: refused, nothing taken
    assert a.mscc[0].result_code == C.DIAMETER_CREDIT_LIMIT_REACHED
    assert balance(server, acct) == to_micro("0.90")
    await c.close()


async def test_retransmitted_update_debits_once(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000005"
    await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=600))]))
    upd = ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, requested=Units(time=600), used=[Units(time=300)])])
    hbh, e2e = c.next_ids()
    from protocol.ccr import encode_ccr
    first = await c.request_raw(encode_ccr(upd, hbh, e2e))
    after_first = balance(server, acct)
    assert after_first == to_micro("10") - to_micro("0.05")
    # same e2e, T flag, new hop-by-hop: the first answer again, byte for byte but the hop-by-hop id
    again = await c.request_raw(encode_ccr(upd, hbh + 1000, e2e, retransmit=True))
    assert again[:12] == first[:12] and again[16:] == first[16:]
    assert int.from_bytes(again[12:16], "big") == hbh + 1000
    # a copy without the T flag and with a new end-to-end id: recognised by Session-Id + CC-Request-Number
    third = await c.request_raw(encode_ccr(upd, hbh + 2000, e2e + 7))
    assert third[20:] == first[20:]
    assert balance(server, acct) == after_first
    await c.close()


async def test_unknown_user_and_unknown_session(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = await c.ccr(ccr(new_session_id(), 1, 0, "499999999999", [MSCCRequest(rating_group=100, requested=Units())]))
    assert a.result_code == C.DIAMETER_USER_UNKNOWN
    a = await c.ccr(ccr(new_session_id(), 2, 1, "491700000001", [MSCCRequest(rating_group=100, used=[Units(time=1)])]))
    assert a.result_code == C.DIAMETER_UNKNOWN_SESSION_ID
    await c.close()


async def test_suspended_account_denied(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = await c.ccr(ccr(new_session_id(), 1, 0, "491700000008", [MSCCRequest(rating_group=100, requested=Units())]))
    assert a.result_code == C.DIAMETER_END_USER_SERVICE_DENIED
    await c.close()


async def test_rating_failed_for_unknown_rating_group(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    a = await c.ccr(ccr(new_session_id(), 1, 0, "491700000012", [MSCCRequest(rating_group=999, requested=Units()),
                                                             MSCCRequest(rating_group=100, requested=Units(time=60))]))
    assert a.result_code == C.DIAMETER_SUCCESS
    assert [m.result_code for m in a.mscc] == [C.DIAMETER_RATING_FAILED, C.DIAMETER_SUCCESS]
    a = await c.ccr(ccr(new_session_id(), 1, 0, "491700000012", [MSCCRequest(rating_group=999, requested=Units())]))
    assert a.result_code == C.DIAMETER_RATING_FAILED
    from protocol import build as B
    assert a.failed_avp == B.u32(432, 999)  # names the Rating-Group that has no rate
    await c.close()


async def test_credit_limit_reached_and_usage_still_debited(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000006"
    a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=600))]))
    assert a.mscc[0].granted.time == 120  # 0.025 buys two minutes
    assert a.mscc[0].final_unit_action == C.FinalUnitAction.TERMINATE
    a = await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, requested=Units(time=600),
                                                      used=[Units(time=120, reporting_reason=C.ReportingReason.QUOTA_EXHAUSTED)])]))
    assert a.result_code == C.DIAMETER_CREDIT_LIMIT_REACHED
    assert a.mscc[0].result_code == C.DIAMETER_CREDIT_LIMIT_REACHED and a.mscc[0].granted is None
    assert balance(server, acct) == to_micro("0.005")
    await c.close()


async def test_final_unit_indication_on_last_grant(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000007"
    a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    assert a.mscc[0].granted.time == 60 and a.mscc[0].final_unit_action is None  # enough for it
    a = await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, requested=Units(time=600), used=[Units(time=60)])]))
    assert a.mscc[0].granted.time == 120 and a.mscc[0].final_unit_action == C.FinalUnitAction.TERMINATE
    c2 = await connect(server)
    a = await c2.ccr(ccr(new_session_id(), 1, 0, "491700000011", [MSCCRequest(rating_group=200, requested=Units(total_octets=5 * MIB))]))
    m = a.mscc[0]
    assert m.granted.total_octets == MIB and m.final_unit_action == C.FinalUnitAction.REDIRECT
    assert m.redirect_server_address == "http://topup.example.net/"
    await c.close()
    await c2.close()


async def test_pipelined_updates_of_one_session_apply_in_order(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000010"
    await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=60)),
                                      MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))]))
    # one CCR-U per MSCC, sent without waiting, as some gateways do
    ups = [c.ccr(ccr(sid, 2, n, acct, [MSCCRequest(rating_group=rg, requested=Units(), used=[u])]))
           for n, (rg, u) in enumerate([(100, Units(time=60)), (200, Units(total_octets=MIB)),
                                        (100, Units(time=60)), (200, Units(total_octets=MIB))], start=1)]
    answers = await asyncio.gather(*ups)
    assert [a.result_code for a in answers] == [2001] * 4
    await c.ccr(ccr(sid, 3, 5, acct, []))
    assert balance(server, acct) == to_micro("10") - to_micro("0.04")
    await c.close()


async def test_200_concurrent_sessions_never_overdraw(server) -> None:  # type: ignore[no-untyped-def]
    acct = "491700000009"  # 2.00 EUR = 200 minutes at 0.01
    clients = [await connect(server) for _ in range(4)]

    async def one(i: int) -> int:
        c = clients[i % 4]
        sid = new_session_id()
        a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=180))]))
        granted = a.mscc[0].granted.time if a.mscc and a.mscc[0].granted else 0
        await c.ccr(ccr(sid, 3, 1, acct, [MSCCRequest(rating_group=100, used=[Units(time=granted + 60)])]))
        return granted

    granted = await asyncio.gather(*(one(i) for i in range(200)))
    acc = account(server.data, acct)
    assert acc.balance >= 0 and acc.reserved == 0
    assert sum(granted) <= 200 * 60  # never more granted than the money covers
    # usage beyond the grants was debited only up to the balance: nothing below zero
    assert acc.balance < to_micro("2")
    for c in clients:
        await c.close()


async def test_suspended_mid_session_usage_taken_no_new_quota(server) -> None:  # type: ignore[no-untyped-def]
    from balance import ops
    from balance.store import open_store
    c = await connect(server)
    sid, acct = new_session_id(), "491700000013"
    a = await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=120))]))
    assert a.mscc[0].granted.time == 120
    store = open_store(server.data)  # the operator suspends the account while the call runs
    store.execute(lambda tx: ops.set_status(tx, None, acct, "suspended"))
    store.close()
    a = await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, requested=Units(time=120),
                                                      used=[Units(time=90)])]))
    assert a.result_code == C.DIAMETER_END_USER_SERVICE_DENIED
    assert a.mscc[0].result_code == C.DIAMETER_END_USER_SERVICE_DENIED and a.mscc[0].granted is None
    acc = account(server.data, acct)
    assert acc.balance == to_micro("10") - to_micro("0.02") and acc.reserved == 0
    await c.close()


async def test_usage_without_reservation_is_priced_in_its_unit(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000014"
    await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=200, requested=Units(total_octets=MIB))]))
    await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=200, used=[Units(total_octets=MIB)])]))
    assert account(server.data, acct).reserved == 0  # no RSU: the hold is released
    a = await c.ccr(ccr(sid, 3, 2, acct, [MSCCRequest(rating_group=200, used=[Units(total_octets=2 * MIB)])]))
    assert a.result_code == 2001
    # 3 MiB in all, cumulative: 0.03, not 2,097,152 micro-units for the unreserved 2 MiB
    assert balance(server, acct) == to_micro("10") - to_micro("0.03")
    await c.close()


async def test_late_request_number_is_applied_not_refused(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000015"
    await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=600))]))
    a = await c.ccr(ccr(sid, 2, 2, acct, [MSCCRequest(rating_group=100, requested=Units(time=600), used=[Units(time=120)])]))
    assert a.result_code == 2001
    a = await c.ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, used=[Units(time=300)])]))
    assert a.result_code == 2001  # U-1 overtaken by U-2 (failover): its usage still counts
    await c.ccr(ccr(sid, 3, 3, acct, [MSCCRequest(rating_group=100, used=[])]))
    assert balance(server, acct) == to_micro("10") - to_micro("0.07")  # 420 s = 7 started minutes
    await c.close()


async def test_duplicate_replayed_after_several_later_requests(server) -> None:  # type: ignore[no-untyped-def]
    from protocol.ccr import encode_ccr
    c = await connect(server)
    sid, acct = new_session_id(), "491700000015"
    await c.ccr(ccr(sid, 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=60))]))
    frames = []
    for n in range(1, 7):
        f = encode_ccr(ccr(sid, 2, n, acct, [MSCCRequest(rating_group=100, requested=Units(time=60),
                                                         used=[Units(time=10)])]), *c.next_ids())
        frames.append((f, await c.request_raw(f)))
    before = balance(server, acct)
    f, first = frames[0]
    hbh, _ = c.next_ids()
    again = await c.request_raw(encode_ccr(ccr(sid, 2, 1, acct, [MSCCRequest(rating_group=100, requested=Units(time=60),
                                                                             used=[Units(time=10)])]),
                                           hbh, int.from_bytes(f[16:20], "big"), retransmit=True))
    assert again[20:] == first[20:] and balance(server, acct) == before
    await c.close()


async def test_one_rating_group_in_two_msccs_is_granted_once(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000016"
    a = await c.ccr(ccr(sid, 1, 0, acct, [
        MSCCRequest(rating_group=100, service_identifiers=[1], requested=Units(time=120)),
        MSCCRequest(rating_group=100, service_identifiers=[2], requested=Units(time=120))]))
    assert [m.result_code for m in a.mscc] == [2001, 2001]
    assert a.mscc[0].granted.time == 120 and a.mscc[1].granted is None
    assert account(server.data, acct).reserved == to_micro("0.02")
    a = await c.ccr(ccr(sid, 3, 1, acct, [
        MSCCRequest(rating_group=100, service_identifiers=[1], used=[Units(time=60)]),
        MSCCRequest(rating_group=100, service_identifiers=[2], used=[Units(time=60)])]))
    assert a.result_code == 2001
    acc = account(server.data, acct)
    assert acc.balance == to_micro("0.005") and acc.reserved == 0  # 120 s in one rating group: 0.02
    await c.close()


async def test_single_service_client_gets_top_level_grant(server) -> None:  # type: ignore[no-untyped-def]
    c = await connect(server)
    sid, acct = new_session_id(), "491700000017"
    a = await c.ccr(ccr(sid, 1, 0, acct, [], requested=Units(time=60)))
    assert a.result_code == 2001 and a.mscc == [] and a.granted.time == 60
    a = await c.ccr(ccr(sid, 3, 1, acct, [], used=[Units(time=61)]))
    assert a.result_code == 2001
    assert balance(server, acct) == to_micro("10") - to_micro("0.02")
    await c.close()


async def test_single_service_last_grant_has_message_level_fui(server) -> None:  # type: ignore[no-untyped-def]
    """Without MSCC there is nowhere else to put it: the CCA's own Final-Unit-Indication."""
    c = await connect(server)
    sid, acct = new_session_id(), "491700000019"
    a = await c.ccr(ccr(sid, 1, 0, acct, [], requested=Units(time=60)))
    assert a.granted.time == 60 and a.validity_time == 900 and a.final_unit is None
    a = await c.ccr(ccr(sid, 2, 1, acct, [], requested=Units(time=600), used=[Units(time=60)]))
    assert a.result_code == 2001 and a.mscc == []
    assert a.granted.time == 60 and a.validity_time == 900  # 0.025 - 0.01 left: one more minute
    assert a.final_unit is not None and a.final_unit.final_unit_action == C.FinalUnitAction.TERMINATE
    a = await c.ccr(ccr(sid, 3, 2, acct, [], used=[Units(time=60)]))
    assert a.result_code == 2001 and a.final_unit is None
    assert balance(server, acct) == to_micro("0.005")
    await c.close()


async def test_proxy_info_copied_and_zero_unit_event_refused(server) -> None:  # type: ignore[no-untyped-def]
    from protocol import build as B
    from protocol.ccr import encode_ccr
    from protocol.message import decode_message
    c = await connect(server)
    acct = "491700000018"
    proxy = B.group(284, B.utf8(280, "dra1.test") + B.octets(33, b"state-1"))
    req = ccr(new_session_id(), 1, 0, acct, [MSCCRequest(rating_group=100, requested=Units(time=60))])
    raw = await c.request_raw(encode_ccr(req, *c.next_ids(), extra_avps=proxy))
    infos = decode_message(raw).find_all("Proxy-Info")
    assert len(infos) == 1 and infos[0].find("Proxy-State").value == b"state-1"
    a = await c.ccr(ccr(new_session_id(), 4, 0, acct, [MSCCRequest(rating_group=100, requested=Units())]))
    assert a.mscc[0].result_code == C.DIAMETER_INVALID_AVP_VALUE
    assert balance(server, acct) == to_micro("10")
    await c.close()
