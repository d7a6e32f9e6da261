"""`ocs tariff load|show|list|retire|check`: versioned tariffs in the data directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocs.cli.common import (
    CommandError,
    Subparsers,
    add_data_arg,
    engine,
    format_instant,
    parse_instant,
)

if TYPE_CHECKING:
    from balance.store import Store
    from rating.tariff_store import TariffStore


def register(sub: Subparsers) -> None:
    p = sub.add_parser("tariff", help="load, show and list tariff versions")
    cmds = p.add_subparsers(dest="tariff_command", metavar="SUBCOMMAND", required=True)

    ld = cmds.add_parser("load", help="validate a TOML tariff and store it as a new version")
    ld.add_argument("file", metavar="FILE")
    ld.add_argument("--effective-from", metavar="ISO8601", default=None,
                    help="when the version takes effect (default now; no zone = UTC; a time "
                         "already past means now)")
    add_data_arg(ld)
    ld.set_defaults(func=cmd_load)

    sh = cmds.add_parser("show", help="one version (default: the one in force now)")
    sh.add_argument("version", nargs="?", type=int, metavar="VERSION")
    sh.add_argument("--json", action="store_true")
    add_data_arg(sh)
    sh.set_defaults(func=cmd_show)

    rt = cmds.add_parser("retire", help="never choose a version for new sessions again")
    rt.add_argument("version", type=int, metavar="VERSION")
    add_data_arg(rt)
    rt.set_defaults(func=cmd_retire)

    ls = cmds.add_parser("list", help="every stored version")
    ls.add_argument("--json", action="store_true")
    add_data_arg(ls)
    ls.set_defaults(func=cmd_list)

    ck = cmds.add_parser("check", help="validate a TOML tariff without storing it")
    ck.add_argument("file", metavar="FILE")
    ck.add_argument("--rating-groups", metavar="PLAN:RG,...", default=None,
                    help="also require a rate for each PLAN:RG pair (e.g. default:100,default:200)")
    add_data_arg(ck)
    ck.set_defaults(func=cmd_check)


def _store(data: str, *, create: bool) -> tuple[Store, TariffStore]:
    from balance.store import open_store
    from rating.tariff_store import TariffStore
    if not create and not (Path(data) / "data.mdb").exists():
        raise CommandError(f"no OCS data at {data}")
    store = open_store(data)
    return store, TariffStore(store)


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def cmd_load(args: argparse.Namespace) -> int:
    from rating.tariff import TariffError, parse_tariff
    text = _read_file(args.file)
    eff = parse_instant(args.effective_from, "--effective-from") if args.effective_from else None
    try:
        parse_tariff(text, args.file)          # validate before touching the data dir
    except TariffError as exc:
        raise CommandError(str(exc)) from None
    now = int(time.time())
    past = eff is not None and eff < now
    # A version cannot have been in force before it existed: a time already past means now,
    # so it is in force for the next request (and no earlier version with a later start
    # keeps it out).
    with engine(args.data, create=True) as run:
        done = run.run("tariff.load", text=text, source=args.file,
                       effective_from=now if eff is None or past else eff)
    version, in_force = done["version"], done["in_force"]
    when = format_instant(done["effective_from"])
    if in_force == version:
        note = f"in force now (from {when})"
        if past and eff is not None:  # past implies eff is not None; this tells mypy
            note += f"; the requested {format_instant(eff)} is past, so it takes effect now"
    elif done["effective_from"] > now:
        note = f"scheduled from {when}"
    else:
        note = f"effective from {when}, but version {in_force or '?'} is in force"
    print(f"loaded tariff version {version} from {args.file}: {note}")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    with engine(args.data) as run:
        done = run.run("tariff.retire", version=args.version)
    if done["already"]:
        print(f"tariff version {args.version} was already retired at {format_instant(done['at'])}")
        return 0
    print(f"retired tariff version {args.version}; version "
          f"{done['in_force'] or '?'} is in force for new sessions "
          "(open sessions keep theirs)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from rating.tariff_store import TariffNotFound, describe
    store, tariffs = _store(args.data, create=False)
    try:
        if args.version is None:
            rater = tariffs.current()
            if rater is None:
                raise CommandError("no tariff version is in force now (see `ocs tariff list`)")
            version = rater.version
        else:
            version = args.version
        try:
            rec = tariffs.record(version)
            rater = tariffs.get(version)
        except TariffNotFound as exc:
            raise CommandError(str(exc)) from None
    finally:
        store.close()
    if args.json:
        out = describe(rater)
        out.update({"effective_from": format_instant(rec["effective_from"]), "loaded_at": format_instant(rec["loaded_at"]),
                    "source": rec["source"], "sha256": rec["sha256"], "text": rec["text"]})
        print(json.dumps(out, indent=2))
    else:
        print(f"# version {version}, effective from {format_instant(rec['effective_from'])}, loaded "
              f"{format_instant(rec['loaded_at'])} from {rec['source']} (sha256 {rec['sha256'][:12]})")
        print(rec["text"], end="" if rec["text"].endswith("\n") else "\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store, tariffs = _store(args.data, create=False)
    try:
        rows = tariffs.list()
        current = tariffs.current()
    finally:
        store.close()
    now_v = current.version if current is not None else None
    out: list[dict[str, Any]] = [{
        "version": r["version"], "effective_from": format_instant(r["effective_from"]),
        "loaded_at": format_instant(r["loaded_at"]), "source": r["source"], "currency": r["currency"],
        "plans": r["plans"], "rates": r["rates"], "sha256": r["sha256"],
        "retired_at": format_instant(r["retired_at"]) if r["retired_at"] is not None else None,
        "in_force": r["version"] == now_v} for r in rows]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print("no tariff versions")
    for r in out:
        mark = "*" if r["in_force"] else ("R" if r["retired_at"] else " ")
        retired = f"  retired {r['retired_at']}" if r["retired_at"] else ""
        print(f"{mark} {r['version']:>4}  effective {r['effective_from']}  loaded {r['loaded_at']}  "
              f"{r['currency']}  plans={','.join(r['plans'])}  rates={r['rates']}  {r['source']}"
              f"{retired}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from rating.tariff import TariffError, check_rating_groups, parse_tariff
    text = _read_file(args.file)
    try:
        tariff = parse_tariff(text, args.file)
        if args.rating_groups:
            pairs = []
            for item in args.rating_groups.split(","):
                plan, sep, rg = item.strip().rpartition(":")
                if not sep or not plan or not rg.isdigit():
                    raise CommandError(f"--rating-groups: want PLAN:RG, got {item!r}")
                pairs.append((plan, int(rg)))
            check_rating_groups(tariff, pairs)
    except TariffError as exc:
        raise CommandError(str(exc)) from None
    print(f"{args.file}: ok ({tariff.currency}, {len(tariff.plans)} plans, {len(tariff.rates)} rates)")
    return 0
