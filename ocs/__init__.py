"""OCS: the charging server, its sessions and its command line."""
