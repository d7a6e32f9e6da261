"""The network front: the `ocs serve` event loop (peers, framing, CER/DWR/DPR, per-session order,
overload) and its link to the charging engine. It never touches the store for a request."""
