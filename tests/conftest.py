"""Tests mirror the layout: one folder per package or wing, helpers shared from here.

Where a test goes:
  protocol/  the Diameter codec, errors with Failed-AVP, oracles (tshark, the RFC example)
  rating/    tariffs, the kernels against the reference rater, the tariff store
  balance/   the LMDB store and balance ops: exactness, crashes, concurrency, money format
  charging/  the credit-control rules through the real server (grants, debits, abuse, sessions,
             sweeper, a full disk, CLI changes in force for the next request)
  front/     the network front through the real server: peers, CER/DWR/DPR, misbehaving
             peers, logs, start/stop, workers, kill -9 chaos
  billing/   CDR export, re-rating, invoices, reconciliation
  cli/       the `ocs` command line: commands, bad input, settings, the demo
  bench/     the benchmarks still run and measure what they say (never a speed assertion)
  (here)     what spans the whole tree: the import graph (test_import_graph.py), the type
             checker (test_types.py, mypy as configured in pyproject.toml)

Shared helpers are modules here, importable from every folder because this conftest's folder
is on sys.path (pytest's default "prepend" import mode): server_harness (a real `ocs serve` on
127.0.0.1 with a temp LMDB, provisioning, reading accounts back), probes (metrics and /readyz over
HTTP), pcap (messages as a pcap for tshark) and gy_requests (CCRs, Session-Ids, a client).
A test imports helpers from these only, never from another folder's test file. Test file names
stay unique across folders (no __init__.py here).
"""
