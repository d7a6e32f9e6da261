"""The sweeper: one pass, inside the engine's write transaction, over what time has made due."""

from __future__ import annotations

import logging

from balance import ops
from balance.store import Tx
from ocs.charging import commands, credit, sessions

log = logging.getLogger("ocs.sweeper")


def sweep(tx: Tx, ctx: credit.Context, limit: int = 512) -> int:
    """One sweeper pass inside the writer: close stale sessions, forget old closed ones.

    Returns how many stale sessions it closed."""
    dbs, now, cfg = ctx.dbs, tx.now, ctx.cfg
    closed = 0
    for key, sid in sessions.due_sessions(tx.read_txn, dbs, sessions.OPEN, now - cfg.timeout(), limit):
        sess = sessions.load(tx.read_txn, dbs, sid)
        if sess is None or sess.state != sessions.OPEN or key != sessions.due_key(sess.filed_state, sess.due, sid):
            tx.write_txn.delete(key, db=dbs["session_due"])  # a leftover key
            if sess is None or sess.state != sessions.OPEN:
                continue
        if sess.seen + cfg.timeout() <= now:
            try:  # one session that cannot be closed must not stop the sweep for all the others
                with tx.nested() as sub:
                    credit.close_stale(sub, ctx, sess)
                    credit.adjust_open_sessions(sub, dbs, -1)
            except Exception:
                log.exception("closing stale session %r failed: it stays open, retried next pass", sid)
                continue
            closed += 1
        sessions.save(tx.write_txn, dbs, sess, force=True)  # re-filed at its real instant or as closed
    for key, sid in sessions.due_sessions(tx.read_txn, dbs, sessions.CLOSED, now - cfg.dedup_retention, limit):
        sess = sessions.load(tx.read_txn, dbs, sid)
        if sess is None:
            tx.write_txn.delete(key, db=dbs["session_due"])
        else:
            sessions.purge(tx.write_txn, dbs, sess)
    ops.expire_reservations(tx, now, limit=limit)  # holds whose session record is gone
    ops.expire_bundles(tx, now, limit=limit)
    ops.purge_idempotency(tx, now - ops.IDEM_RETENTION, limit=limit)
    commands.announce_tariff(tx)  # a scheduled version that took effect since the last pass
    return closed


def report(closed: int) -> None:
    """The log line of a committed pass that closed something (one per pass, none when idle)."""
    if closed:
        log.info("closed %d stale sessions (silent for longer than the session timeout)", closed)
