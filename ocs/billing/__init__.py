"""Billing, offline from the request path: CDRs, their export to files, re-rating, invoices and
reconciliation of the store against the exported files."""
