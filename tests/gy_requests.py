"""Gy requests for tests against the real server: one CCR builder, unique Session-Ids, a client.

Shared by the tests that talk Diameter to `server_harness.start_server` (importable from any
test folder: tests/conftest.py puts tests/ on sys.path).
"""

from __future__ import annotations

import itertools
import time

from server_harness import RunningServer, account

from ocs.client import DiameterClient
from protocol import constants as C
from protocol.records import CCR, MSCCRequest

_ids = itertools.count(1)


def new_session_id(origin: str = "pgw.test") -> str:
    """A Session-Id no other test of this run uses (RFC 6733 shape: origin;high;low)."""
    return f"{origin};{time.time_ns()};{next(_ids)}"


def ccr(sid: str, rtype: int, number: int, msisdn: str | None, mscc: list[MSCCRequest],  # type: ignore[no-untyped-def]
        service_context: str = "32251@3gpp.org", **kw) -> CCR:
    """A CCR for the E.164 subscriber `msisdn` (None: no Subscription-Id); kw: other CCR fields."""
    return CCR(session_id=sid, origin_host="client.test", origin_realm="test",
               destination_realm="test", auth_application_id=4,
               service_context_id=service_context, request_type=rtype, request_number=number,
               subscription_ids=[(C.SubscriptionIdType.END_USER_E164, msisdn)] if msisdn else [],
               mscc=mscc, **kw)


async def connect(server: RunningServer) -> DiameterClient:
    return await DiameterClient.connect(server.host, server.port)


def balance(server: RunningServer, account_id: str) -> int:
    """The account's balance in micro-units, read from the server's store."""
    return account(server.data, account_id).balance
