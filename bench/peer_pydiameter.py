"""The peer: the same credit-control flow on the PyPI `python-diameter` stack (import `diameter`).

A minimal OCS as one would write it with that library: its Node does CER/CEA, DWR and routing;
our Application decodes each CCR into its message objects, rates with the same rating.Rater and
tariff as ours, keeps balances, reservations and cumulative usage in memory (no durability at
all, which flatters it), and answers with per-MSCC Result-Code and GSU.

Library constraints met here: it answers a request on the connection of the request's Origin-Host,
so every client connection must use its own Origin-Host (the bench client does); it only accepts
CERs from configured peers, so we configure CLIENTS of them; it cannot listen on port 0, so we pick
a free port first.

    python -m bench.peer_pydiameter --listen 127.0.0.1:0 --accounts 1000 --tariff FILE
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.echo_server import parse_listen
from bench.workload import account_id

if TYPE_CHECKING:
    from rating.rater import Rater

ORIGIN_HOST = "peer.bench"
DEFAULT_CLIENTS = 256


def client_host(index: int, base: str = "bench.client") -> str:
    """Origin-Host of the bench client's index-th connection (fixed width)."""
    return f"c{index:04d}.{base}"


class Book:
    """In-memory balances, reservations and cumulative usage, priced by a Rater."""

    def __init__(self, rater: Rater, accounts: int, balance: int, validity_time: int = 600) -> None:
        self.rater = rater
        self.balance = {account_id(i): balance for i in range(accounts)}
        self.plan = "default"
        self.held: dict[tuple[str, int], int] = {}
        self.used: dict[tuple[str, int], int] = {}
        self.validity_time = validity_time
        self.lock = threading.Lock()

    def charge(self, account: str, session: str, request_type: int, rating_group: int,
               requested: int | None, used: int) -> tuple[int, int]:
        """(Result-Code, granted units) for one MSCC."""
        rater = self.rater
        rate = rater.find(self.plan, rating_group)
        if rate is None:
            return 5031, 0
        key = (session, rating_group)
        now = int(time.time())
        with self.lock:
            if account not in self.balance:
                return 5030, 0
            before = self.used.get(key, 0)
            if used:
                self.balance[account] -= rater.cost(rate, before, used, now)
                before += used
                self.used[key] = before
            self.held.pop(key, None)
            if request_type == 3:
                self.used.pop(key, None)
                return 2001, 0
            if not requested:
                return 2001, 0
            available = self.balance[account] - sum(
                v for (s, _rg), v in self.held.items() if s == session)
            grant = min(requested, rater.max_units(rate, max(available, 0), before, now))
            if grant <= 0:
                return 4012, 0
            cost = rater.cost(rate, before, grant, now)
            if request_type == 4:               # event, direct debiting
                self.balance[account] -= cost
            else:
                self.held[key] = cost
            return 2001, grant


def _units_of(su: Any) -> tuple[str, int] | None:
    """(attribute, units) of a python-diameter service-unit object (the library is untyped)."""
    if su is None:
        return None
    for attr in ("cc_time", "cc_total_octets", "cc_service_specific_units"):
        value = getattr(su, attr, None)
        if value is not None:
            return attr, int(value)
    return "", 0


def make_app(book: Book) -> Any:
    """The credit-control Application for the Node (python-diameter has no type information)."""
    from diameter.message.avp.grouped import GrantedServiceUnit, MultipleServicesCreditControl
    from diameter.node.application import Application

    class CreditControlApp(Application):  # type: ignore[misc]  # Application is untyped (Any)
        def handle_request(self, message: Any) -> None:
            answer = self.generate_answer(message, result_code=2001)
            answer.cc_request_type = message.cc_request_type
            answer.cc_request_number = message.cc_request_number
            subs = message.subscription_id or []
            account = subs[0].subscription_id_data if subs else ""
            if isinstance(account, bytes):
                account = account.decode()
            out = []
            for mscc in message.multiple_services_credit_control or []:
                req = _units_of(mscc.requested_service_unit)
                used = sum(u for _a, u in filter(None, map(_units_of, mscc.used_service_unit)))
                code, granted = book.charge(account, message.session_id,
                                            message.cc_request_type, mscc.rating_group,
                                            req[1] or None if req else None, used)
                gsu = None
                if granted:
                    gsu = GrantedServiceUnit()
                    setattr(gsu, req[0] if req and req[0] else "cc_total_octets", granted)
                out.append(MultipleServicesCreditControl(
                    rating_group=mscc.rating_group, result_code=code,
                    granted_service_unit=gsu,
                    validity_time=book.validity_time if granted else None))
            if out:
                answer.multiple_services_credit_control = out
            self.send_answer(answer)

    return CreditControlApp(4, is_auth_application=True)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]  # (host, port); typeshed says Any
        return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_pydiameter", description=__doc__)
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 0),
                        metavar="HOST:PORT")
    parser.add_argument("--realm", default="ocs", help="realm served (the CCRs' Destination-Realm)")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--balance", default="1000000", help="initial balance per account")
    parser.add_argument("--tariff", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS,
                        help="client Origin-Hosts to accept (c0000.bench.client ...)")
    args = parser.parse_args(argv)

    from diameter.node import Node

    from balance.money import to_micro
    from rating.rater import rater_for
    from rating.tariff import load_tariff

    logging.getLogger("diameter").setLevel(logging.ERROR)
    rater = rater_for(load_tariff(args.tariff), 1)
    book = Book(rater, args.accounts, to_micro(args.balance))
    host, port = args.listen
    port = port or free_port(host)
    node = Node(ORIGIN_HOST, args.realm, ip_addresses=[host], tcp_port=port)
    node.idle_timeout = 3600
    peers = [node.add_peer(f"aaa://{client_host(i)}", args.realm) for i in range(args.clients)]
    node.add_application(make_app(book), peers)
    node.start()
    print(f"OCS ready {host}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    node.stop(wait_timeout=2, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
