"""The one list of the LMDB environment's named dbs and of the fixed keys stored in them.

Every process opens the same environment (balance.store), so every named db and every fixed key of
every component is declared here, with what it holds and how its key and value are encoded. The
byte values are the on-disk format: changing one is a migration (balance.migrate, which bumps
SCHEMA_VERSION). Integers in keys are big-endian unsigned, so byte order is numeric order ("be8"
is 8 bytes of it). Integers in values (counters, instants) have ONE encoding, "i64": 8 bytes
big-endian two's complement, written and read with pack_i64/unpack_i64 below. Signed because the
refundable-money counter takes negative deltas and an instant before 1970 is a valid int; for
the values that are never negative (ids, sequences, checkpoints, below 2**63) it is byte for byte
the unsigned be8 those components write, so both read the same. "msgpack" is a positional msgpack
array (see the module named for its fields). A component keeps its own key-building functions; it
takes the db names, fixed keys and the integer codec from here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

# -- the format version, stored at META_SCHEMA_VERSION (absent: 1) --------------------------------
# 1: USAGE values and META_OPEN_SESSIONS in decimal ASCII, EXPORT_RAN a msgpack int.
# 2: those three are i64 like every other integer value.
# 3: a BUNDLES value has a ninth field, the amount the bundle was sold with (0: not known).
SCHEMA_VERSION: Final = 3

# -- the integer codecs: "i64" for values, "be8" for keys ------------------------------------------
# Bound Struct methods, not wrapper functions: the charging rules call them per request.
_I64: Final = struct.Struct(">q")
pack_i64: Final[Callable[[int], bytes]] = _I64.pack
pack_be8: Final[Callable[[int], bytes]] = struct.Struct(">Q").pack  # an integer in a key (>= 0)


def unpack_i64(raw: bytes) -> int:
    """The int of an i64 value; struct.error for any other length (an old ASCII value is not misread)."""
    value: int = _I64.unpack(raw)[0]
    return value

# -- named dbs of the balance store (balance.records, balance.ops) ------------------------------
ACCOUNTS: Final = "accounts"            # account_id utf-8 -> msgpack Account
ALIASES: Final = "aliases"              # alias (IMSI, MSISDN...) utf-8 -> account_id utf-8
BUNDLES: Final = "bundles"              # account_id NUL bundle_id -> msgpack Bundle
BUNDLE_EXPIRY: Final = "bundle_expiry"  # be8 expiry instant + bundles key -> b""
RESERVATIONS: Final = "reservations"    # session_id NUL rating group (4 bytes BE) -> msgpack Reservation
RESV_ACCOUNT: Final = "resv_account"    # account_id NUL reservations key -> b""
RESV_EXPIRY: Final = "resv_expiry"      # be8 filed expiry instant + reservations key -> b""
LEDGER: Final = "ledger"                # be8 global position (commit order) -> msgpack LedgerEntry
IDEM: Final = "idem"                    # idempotency key bytes -> msgpack [ts, op, outcome(, args)]

# -- named dbs shared with the other components ---------------------------------------------------
SESSIONS: Final = "sessions"            # session_id utf-8 -> msgpack Session (ocs.charging.sessions)
CDRS: Final = "cdrs"                    # be8 CDR id -> msgpack CDR columns (ocs.billing.cdr)
CDR_INDEX: Final = "cdr_index"          # session_id utf-8 NUL be8 CDR id -> b"" (ocs.billing.cdr)
META: Final = "meta"                    # the fixed keys META_* below -> counters and cursors
TARIFFS: Final = "tariffs"              # the fixed keys TARIFF_* below -> versions (rating.tariff_store)
EXPORT: Final = "export"                # the fixed keys EXPORT_* / INVOICE_* below -> export state

# -- named dbs of the charging server (ocs.charging) ----------------------------------------------
SESSION_DUE: Final = "session_due"      # b"o"|b"c" + instant (4 bytes BE) + session_id -> b""
USAGE: Final = "usage"                  # account_id NUL YYYYMM NUL rating group (4 bytes BE) and
#                                         other per-account counters -> i64 (ocs.charging.counters)

# -- named dbs of the integration surface (ocs.charging.access, ocs.charging.audit) ---------------
API_KEYS: Final = "api_keys"            # sha256 of an API key's secret (32 bytes) -> msgpack key record
AUDIT: Final = "audit"                  # be8 position -> msgpack audit entry (appended, never edited)

# -- named dbs of the notifications (ocs.charging.outbox, ocs.charging.alerts) --------------------
OUTBOX: Final = "outbox"                # be8 position -> msgpack event map (appended, never edited)
WEBHOOKS: Final = "webhooks"            # subscription id utf-8 -> msgpack subscription map
DELIVERIES: Final = "deliveries"        # subscription id NUL be8 event position -> msgpack delivery
DELIVERY_DUE: Final = "delivery_due"    # be8 due instant (ms) + deliveries key -> b""
ALERTS: Final = "alerts"                # b"a" account_id | b"p" plan -> i64 low-balance threshold;
#                                         b"f" kind byte account_id -> b"" (fired, not re-armed)

BALANCE_DBS: Final = (ACCOUNTS, ALIASES, BUNDLES, BUNDLE_EXPIRY, RESERVATIONS, RESV_ACCOUNT,
                      RESV_EXPIRY, LEDGER, IDEM)
SHARED_DBS: Final = (SESSIONS, CDRS, CDR_INDEX, META, TARIFFS, EXPORT)
SERVER_DBS: Final = (SESSION_DUE, USAGE)
ACCESS_DBS: Final = (API_KEYS, AUDIT)
NOTIFY_DBS: Final = (OUTBOX, WEBHOOKS, DELIVERIES, DELIVERY_DUE, ALERTS)
# Every named db of the environment, in the order open_store opens them. The server's two were
# once created only by ocs.charging.credit.open_dbs; open_store now creates them too (an existing
# environment without them gains two empty dbs, which is what open_dbs did on the server's start).
ALL_DBS: Final = BALANCE_DBS + SHARED_DBS + SERVER_DBS + ACCESS_DBS + NOTIFY_DBS

# -- fixed keys in META -------------------------------------------------------------------------
META_OPEN_SESSIONS: Final = b"open_sessions"       # open session count, i64 (ocs.charging.counters)
META_SCHEMA_VERSION: Final = b"schema_version"     # SCHEMA_VERSION of the format, i64 (balance.migrate)
META_CDR_SEQ: Final = b"cdr_seq"                   # last CDR id drawn, i64 (ocs.billing.cdr)
META_IDEM_PURGE_AT: Final = b"balance.idem_purge_at"  # idem key where purge_idempotency resumes; b"": start
META_WEBHOOK_SEQ: Final = b"webhook_seq"           # last webhook subscription number, i64 (ocs.charging.outbox)
META_TARIFF_ANNOUNCED: Final = b"tariff_announced"  # version last announced as tariff.activated, i64
META_ALERTS_GEN: Final = b"alerts_gen"             # 8 random bytes, new at every threshold change (ocs.charging.alerts)

# -- fixed keys in TARIFFS (rating.tariff_store) ------------------------------------------------
TARIFF_COUNTER: Final = b"counter"    # latest version, i64
TARIFF_CHANGES: Final = b"changes"    # count of loads and retirements, i64
TARIFF_VERSION: Final = b"v"          # + version (8 bytes BE) -> msgpack record (source, dates, sha256)
TARIFF_EFFECTIVE: Final = b"e"        # + version (8 bytes BE) -> effective_from, i64
TARIFF_RETIRED: Final = b"r"          # + version (8 bytes BE) -> retirement instant, i64

# -- fixed keys in EXPORT (ocs.billing.export.exporter): the consumer "server-files" uses them bare,
#    every other consumer prefixes them with EXPORT_CONSUMER_PREFIX + name + b"/" --------------
EXPORT_CHECKPOINT: Final = b"checkpoint"  # last CDR id exported, i64
EXPORT_INTENT: Final = b"intent"          # the file being written: msgpack [path, fmt, first, last]
EXPORT_RAN: Final = b"ran"                # when the consumer last ran, i64 (unix s)
EXPORT_FILE_PREFIX: Final = b"file:"      # + first CDR id (be8) -> msgpack [path, fmt, first, last,
#                                           size, written at]: the log of files written
EXPORT_CONSUMER_PREFIX: Final = b"c/"     # + consumer name + b"/" + one of the keys above

# -- fixed keys in EXPORT (ocs.billing.invoice.numbering) -----------------------------------------
INVOICE_SEQ: Final = b"inv_seq"   # last invoice number drawn, i64
INVOICE_PREFIX: Final = b"inv:"   # + period utf-8 NUL account_id utf-8 -> its invoice number, i64
