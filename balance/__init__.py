"""Balance store on LMDB: accounts, bundles, reservations, ledger, group commit."""
