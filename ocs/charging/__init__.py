"""The charging engine: the process that applies CCRs to the LMDB store in durable batches, the
credit-control rules (reserve, debit, refund), sessions, the sweeper and the tariff versions."""
