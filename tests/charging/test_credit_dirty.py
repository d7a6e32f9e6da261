"""A CCR that the rules answer without changing anything leaves its op clean (`Tx.dirty` false):
reading the session, the account or the counters does not mark it, so if such an op failed the
group-commit writer would drop it alone instead of rerunning its whole batch op by op."""

from __future__ import annotations

from server_harness import provision

from balance.store import Tx, open_store
from ocs.charging import credit
from ocs.charging.settings import ChargingSettings
from ocs.charging.tariffs import Raters
from ocs.config import ServeConfig
from protocol import constants as C
from protocol.cca import decode_cca
from protocol.records import CCR, MSCCRequest, Units
from rating.tariff_store import TariffStore

A = "491730000001"


def request(session_id: str, request_type: int, number: int) -> CCR:
    return CCR(session_id=session_id, destination_realm="test", auth_application_id=4,
               service_context_id="32251@3gpp.org", request_type=request_type,
               request_number=number, subscription_ids=[(C.SubscriptionIdType.END_USER_E164, A)],
               mscc=[MSCCRequest(rating_group=100, requested=Units(time=60))])


def test_answers_that_change_nothing_leave_the_op_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    provision(data, {A: {"balance": "10"}})
    store = open_store(data)
    try:
        ctx = credit.Context(ChargingSettings.of(ServeConfig(data=str(data))),
                             credit.open_dbs(store), Raters(TariffStore(store)))

        def run(ccr: CCR) -> tuple[int, bool]:
            def op(tx: Tx) -> tuple[int, bool]:
                raw = credit.process(tx, ctx, ccr)
                return decode_cca(raw).result_code, tx.dirty
            return store.execute(op)

        assert run(request("gw;unknown;1", C.CCRequestType.UPDATE_REQUEST, 1)) == (
            C.DIAMETER_UNKNOWN_SESSION_ID, False)
        assert run(request("gw;nul\0;1", C.CCRequestType.INITIAL_REQUEST, 0)) == (
            C.DIAMETER_INVALID_AVP_VALUE, False)
        assert run(request("gw;open;1", C.CCRequestType.INITIAL_REQUEST, 0)) == (C.DIAMETER_SUCCESS, True)
        # a retransmission is answered from the session record: read, not written
        assert run(request("gw;open;1", C.CCRequestType.INITIAL_REQUEST, 0)) == (C.DIAMETER_SUCCESS, False)
    finally:
        store.close()
