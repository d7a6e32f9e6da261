"""The CDR record and everything that reads or writes its bytes: the one owner of the CDR.

record.py   the CDR dataclass, COLUMNS, the text form of values (to_row, iso, amounts)
layout.py   its LMDB layout: key/value encoding, the id sequence, reads by id and by session
files.py    the exported file formats (CSV, JSON Lines, Parquet): writers and the one reader
columns.py  the files read as numpy columns, for re-rating in bulk

The record and its LMDB layout are re-exported here: the charging rules write CDRs as
`ocs.billing.cdr.write(txn, dbs, CDR(...))`.
"""

from ocs.billing.cdr.layout import (
    SEQ_KEY,
    by_session,
    first_id,
    get,
    iter_from,
    key,
    last_id,
    next_id,
    pack,
    unpack,
    write,
)
from ocs.billing.cdr.record import CDR, COLUMNS, iso, to_row

__all__ = ["CDR", "COLUMNS", "SEQ_KEY", "by_session", "first_id", "get", "iso", "iter_from", "key",
           "last_id", "next_id", "pack", "to_row", "unpack", "write"]
