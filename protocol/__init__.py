"""Diameter wire format (RFC 6733, RFC 8506, 3GPP TS 32.299 Gy): a pure codec with no I/O and no business rules."""
