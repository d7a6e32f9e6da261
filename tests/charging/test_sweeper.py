"""The sweeper against a real LMDB store, in process: one session it cannot close must not stop
it from closing the others (it used to abort the whole pass, every pass)."""

from __future__ import annotations

from server_harness import account, provision

from balance import schema
from balance.store import open_store
from ocs.charging import credit, sessions, sweeper
from ocs.charging.settings import ChargingSettings
from ocs.charging.tariffs import Raters
from ocs.config import ServeConfig
from protocol import constants as C
from protocol.records import CCR, MSCCRequest, Units
from rating.tariff_store import TariffStore

A, B = "491730000001", "491730000002"


def initial(session_id: str, msisdn: str) -> CCR:
    return CCR(session_id=session_id, destination_realm="test", auth_application_id=4,
               service_context_id="32251@3gpp.org", request_type=1, request_number=0,
               subscription_ids=[(C.SubscriptionIdType.END_USER_E164, msisdn)],
               mscc=[MSCCRequest(rating_group=100, requested=Units(time=60))])


def test_one_broken_session_does_not_stop_the_sweep(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    provision(data, {A: {"balance": "10"}, B: {"balance": "10"}})
    store = open_store(data)
    try:
        ctx = credit.Context(ChargingSettings.of(ServeConfig(data=str(data), session_timeout=60)),
                             credit.open_dbs(store),
                             Raters(TariffStore(store)))
        store.execute(lambda tx: credit.process(tx, ctx, initial("gw;broken;1", A)))
        store.execute(lambda tx: credit.process(tx, ctx, initial("gw;fine;1", B)))
        assert account(data, A).reserved == account(data, B).reserved == 10_000

        def corrupt(tx):  # type: ignore[no-untyped-def]
            # the session now names an account its reservation is not on: release() refuses
            sess = sessions.load(tx.txn, ctx.dbs, "gw;broken;1")
            sess.account_id = B
            sessions.save(tx.txn, ctx.dbs, sess)
        store.execute(corrupt)

        def sweep_later(tx):  # type: ignore[no-untyped-def]
            tx.now += 3600
            return sweeper.sweep(tx, ctx)
        assert store.execute(sweep_later) == 1          # the fine one closed, no exception
        assert account(data, B).reserved == 0
        assert account(data, A).reserved == 0            # its hold: released by the reservation's
        #                                                  own expiry, the sweeper's backstop
        with store.read() as view:
            assert sessions.load(view.txn, ctx.dbs, "gw;fine;1").state == sessions.CLOSED
            assert sessions.load(view.txn, ctx.dbs, "gw;broken;1").state == sessions.OPEN
        assert store.execute(sweep_later) == 1          # retried on the next pass: with its hold
        with store.read() as view:                       # gone, nothing refuses the close now
            assert sessions.load(view.txn, ctx.dbs, "gw;broken;1").state == sessions.CLOSED
    finally:
        store.close()


def test_refused_initial_is_never_stale_and_is_forgotten(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A CCR-I refused with 4012 is kept only for replay: the sweeper does not close it as stale,
    and forgets it after dedup_retention like a closed session."""
    data = tmp_path / "data"
    provision(data, {A: {"balance": "0"}, B: {"balance": "10"}})
    store = open_store(data)
    try:
        cfg = ServeConfig(data=str(data), session_timeout=60, dedup_retention=300)
        ctx = credit.Context(ChargingSettings.of(cfg), credit.open_dbs(store), Raters(TariffStore(store)))
        first = store.execute(lambda tx: credit.process(tx, ctx, initial("gw;refused;1", A)))
        store.execute(lambda tx: credit.process(tx, ctx, initial("gw;open;1", B)))
        with store.read() as view:
            assert view.txn.get(credit.OPEN_SESSIONS_KEY, db=ctx.dbs["meta"]) == schema.pack_i64(1)
            assert sessions.load(view.txn, ctx.dbs, "gw;refused;1").state == sessions.REFUSED

        def sweep_at(offset: int):  # type: ignore[no-untyped-def]
            def run(tx):  # type: ignore[no-untyped-def]
                tx.now += offset
                return sweeper.sweep(tx, ctx)
            return run
        assert store.execute(sweep_at(100)) == 1  # only the open one is stale
        assert store.execute(lambda tx: credit.process(tx, ctx, initial("gw;refused;1", A))) == first
        store.execute(sweep_at(400))
        with store.read() as view:
            assert sessions.load(view.txn, ctx.dbs, "gw;refused;1") is None
            assert view.txn.get(credit.OPEN_SESSIONS_KEY, db=ctx.dbs["meta"]) == schema.pack_i64(0)
    finally:
        store.close()
