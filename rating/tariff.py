"""Tariff files: TOML text -> validated `Tariff` records, with line-numbered errors.

Schema (everything optional except what the minimum schema in the issue requires)::

    currency = "EUR"
    [[plan]]                      # per-plan settings; a plan used only by [[rate]] gets the defaults
    name = "postpaid"
    timezone = "Europe/Paris"     # zoneinfo name; bands are local times in this zone (default UTC)
    recurring_fee = "9.99"        # per billing period (calendar month), money
    tax_rate = "0.20"             # fraction, stored as parts per million
    discounts = [{threshold = "50", percent = "10"}]   # 10% off usage above 50, marginal per step
    final_unit_action = "terminate"   # | "redirect" (+ redirect_address) | "restrict_access"
                                      #   (+ restriction_filter_rule)
    [[rate]]
    plan = "default"              # default "default"
    rating_group = 1              # Rating-Group, or "*" for any rating group of the plan
    unit = "seconds"              # seconds | octets | events
    price = "0.01"                # price of one increment (the default band, first tier)
    increment = 60
    first_increment = 60          # default = increment
    connect_fee = "0"             # once per session and rating group
    [[rate.tier]]                 # tiers by cumulative usage in the billing period
    from = 1073741824             # period units from which this tier's price applies
    price = "0.002"
    [[rate.band]]                 # time-of-day / day-of-week bands (plan local time)
    name = "offpeak"
    days = "mon-fri"              # "mon-fri", "sat,sun", ["sat", "sun"], "all" (default all)
    from = "19:00"                # local HH:MM; to <= from wraps past midnight into the next day
    to = "08:00"                  # from == to: the whole day
    price = "0.005"               # or, when the rate has tiers, a list: one price per tier

Money is parsed with balance.money into integer micro-units; floats are refused. Minutes of the week not
covered by any band use the rate's own price (band 0). The pricing rules (how increments, bands and
tiers interact) are in rating/reference.py, the oracle every other implementation is tested against.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from balance.money import MoneyError, to_micro

UNITS = ("seconds", "octets", "events")
UNIT_CODES = {name: i for i, name in enumerate(UNITS)}
WILDCARD = -1  # rating_group value of a "*" rate
FINAL_UNIT_ACTIONS = {"terminate": 0, "redirect": 1, "restrict_access": 2}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_WEEK = 7 * 24 * 60
# Prices above this (about 1.1 million per increment) are refused so the kernel's int64 arithmetic has
# headroom: n increments * price cannot overflow before the saturation check kicks in.
MAX_PRICE = 1 << 40
MAX_RATING_GROUP = (1 << 32) - 1

_TOP_KEYS = {"currency", "description", "rate", "plan"}
_RATE_KEYS = {"plan", "rating_group", "unit", "price", "increment", "first_increment",
              "connect_fee", "band", "tier", "description"}
_BAND_KEYS = {"name", "days", "from", "to", "price"}
_TIER_KEYS = {"from", "price"}
_PLAN_KEYS = {"name", "timezone", "recurring_fee", "tax_rate", "discounts", "final_unit_action",
              "redirect_address", "restriction_filter_rule", "description"}
_DISCOUNT_KEYS = {"threshold", "percent"}


class TariffError(ValueError):
    """A tariff that cannot be used, as "source:LINE: what is wrong"."""


@dataclass(slots=True, frozen=True)
class Band:
    name: str
    days: tuple[int, ...]        # 0 = Monday
    start_minute: int            # local minute of day the band starts
    end_minute: int              # local minute of day it ends (<= start: next day)
    prices: tuple[int, ...]      # micro-units per increment, one per tier
    line: int


@dataclass(slots=True, frozen=True)
class Tier:
    start: int                   # cumulative period units from which `price` applies
    price: int
    line: int


@dataclass(slots=True)
class Rate:
    plan: str
    rating_group: int            # WILDCARD (-1) for "*"
    unit: str
    price: int                   # micro-units per increment: default band, first tier
    increment: int
    first_increment: int
    connect_fee: int
    bands: tuple[Band, ...] = ()
    tiers: tuple[Tier, ...] = ()  # the tiers after the first (which starts at 0 at `price`)
    index: int = 0               # position in Tariff.rates = row in the compiled arrays
    line: int = 0

    @property
    def simple(self) -> bool:
        """No bands and no tiers: the closed formula prices it, no kernel needed."""
        return not self.bands and not self.tiers

    def price_grid(self) -> list[list[int]]:
        """grid[band][tier] in micro-units; band 0 is "no band", tier 0 starts at 0."""
        base = [self.price] + [t.price for t in self.tiers]
        return [base] + [list(b.prices) for b in self.bands]


@dataclass(slots=True, frozen=True)
class Discount:
    threshold: int               # micro-units of usage in the period above which it applies
    ppm: int                     # fraction off, parts per million (10 % = 100_000)
    line: int = 0


@dataclass(slots=True)
class Plan:
    name: str
    timezone: str = "UTC"
    recurring_fee: int = 0
    tax_rate: int = 0            # parts per million (0.20 -> 200_000)
    discounts: tuple[Discount, ...] = ()
    final_unit_action: int = 0   # 0 terminate, 1 redirect, 2 restrict_access
    redirect_address: str | None = None
    restriction_filter_rule: str | None = None
    rates: dict[int, Rate] = field(default_factory=dict)   # rating group (or WILDCARD) -> Rate
    line: int = 0


@dataclass(slots=True)
class Tariff:
    currency: str
    plans: dict[str, Plan]
    rates: list[Rate]
    source: str = "<tariff>"
    text: str = ""
    description: str = ""

    def find(self, plan: str, rating_group: int) -> Rate | None:
        """The rate for a rating group of a plan: exact rating group first, then the wildcard."""
        p = self.plans.get(plan)
        if p is None:
            return None
        rate = p.rates.get(rating_group)
        return rate if rate is not None else p.rates.get(WILDCARD)


def discount_amount(plan: Plan, usage: int) -> int:
    """Volume discount on `usage` micro-units: each step takes its percent off the usage above its
    threshold up to the next step's threshold; rounded down to the micro-unit."""
    total = 0
    steps = sorted(plan.discounts, key=lambda d: d.threshold)
    for i, d in enumerate(steps):
        upper = steps[i + 1].threshold if i + 1 < len(steps) else None
        part = max(0, (usage if upper is None else min(usage, upper)) - d.threshold)
        total += part * d.ppm // 1_000_000
    return total


# ---------------------------------------------------------------- locating lines in the source text

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")


class _Locator:
    """Line numbers for tables and keys; tomllib gives none, so the headers are found in the text."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []   # (1-based line, table name)
        for no, line in enumerate(self.lines, 1):
            m = _HEADER.match(line)
            if m:
                self.headers.append((no, m.group(2).replace('"', "").replace("'", "").replace(" ", "")))

    def _span(self, start: int) -> tuple[int, int]:
        """Lines from `start` up to (excluding) the next header."""
        nxt = [no for no, _ in self.headers if no > start]
        return start, (nxt[0] if nxt else len(self.lines) + 1)

    def table(self, name: str, i: int) -> int:
        """Header line of the i-th [[name]]; 0 when it cannot be found (inline tables)."""
        found = [no for no, n in self.headers if n == name]
        return found[i] if i < len(found) else 0

    def child(self, parent: str, i: int, name: str, j: int) -> int:
        """Header line of the j-th [[parent.name]] inside the i-th [[parent]]."""
        start = self.table(parent, i)
        if not start:
            return 0
        later = [no for no, n in self.headers if n == parent and no > start]
        end = later[0] if later else len(self.lines) + 1
        found = [no for no, n in self.headers if n == f"{parent}.{name}" and start < no < end]
        return found[j] if j < len(found) else start

    def key(self, table_line: int, key: str) -> int:
        """Line of `key = ...` in the table starting at `table_line` (0 = top level)."""
        if table_line == 0:
            start, end = 0, (self.headers[0][0] if self.headers else len(self.lines) + 1)
        else:
            start, end = self._span(table_line)
        pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
        for no in range(max(start, 1), end):
            if pattern.match(self.lines[no - 1]):
                return no
        # inline table or array element: search anywhere after the table start
        pattern = re.compile(rf"""(^|[{{,\s])["']?{re.escape(key)}["']?\s*=""")
        for no in range(max(start, 1), len(self.lines) + 1):
            if pattern.search(self.lines[no - 1]):
                return no
        return table_line or 1


# ---------------------------------------------------------------- value parsing

class _Ctx:
    def __init__(self, source: str, loc: _Locator) -> None:
        self.source, self.loc = source, loc

    def fail(self, line: int, message: str) -> TariffError:
        return TariffError(f"{self.source}:{line or 1}: {message}")

    def money(self, value: Any, what: str, line: int, *, negative_ok: bool = False) -> int:
        if isinstance(value, float):
            raise self.fail(line, f"{what} must be a decimal string like \"0.01\", not a float")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(line, f"{what} must be a decimal string, got {value!r}")
        try:
            micro = to_micro(value)
        except MoneyError as exc:
            raise self.fail(line, f"{what}: {exc}") from None
        if micro < 0 and not negative_ok:
            raise self.fail(line, f"{what} must not be negative: {value!r}")
        if micro > MAX_PRICE:
            raise self.fail(line, f"{what} too large: {value!r}")
        return micro

    def integer(self, value: Any, what: str, line: int, *, minimum: int = 0,
                maximum: int = (1 << 62)) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(line, f"{what} must be an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.fail(line, f"{what} must be between {minimum} and {maximum}, got {value}")
        return value

    def text(self, value: Any, what: str, line: int) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(line, f"{what} must be a non-empty string, got {value!r}")
        return value

    def unknown(self, table: Mapping[str, Any], allowed: set[str], table_line: int,
                what: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(self.loc.key(table_line, key),
                                f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})")


def _day(name: str) -> int | None:
    """mon..sun, the English name, or a start of it of 3 letters or more ("tues", "thurs"; stored
    tariff versions use them): not any word that merely starts like one ("mondayfoo")."""
    name = name.strip()
    for i, full in enumerate(_DAY_NAMES):
        if len(name) >= 3 and full.startswith(name):
            return i
    return None


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _parse_days(ctx: _Ctx, value: Any, line: int) -> tuple[int, ...]:
    if isinstance(value, str):
        value = value.strip().lower()
        if value in ("all", "*", "daily"):
            return tuple(range(7))
        if value == "weekdays":
            return tuple(range(5))
        if value == "weekend":
            return (5, 6)
        items: list[Any] = [p.strip() for p in value.split(",")]
    elif isinstance(value, list):
        items = value
    else:
        raise ctx.fail(line, f"days must be a string like \"mon-fri\" or a list, got {value!r}")
    days: list[int] = []
    for item in items:
        if not isinstance(item, str):
            raise ctx.fail(line, f"day must be a string like \"mon\", got {item!r}")
        item = item.strip().lower()
        if "-" in item:
            a, _, b = item.partition("-")
            i, j = _day(a), _day(b)
            if i is None or j is None:
                raise ctx.fail(line, f"unknown day range {item!r} (use mon..sun)")
            span = range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)]
            days.extend(span)
        else:
            i = _day(item)
            if i is None:
                raise ctx.fail(line, f"unknown day {item!r} (use mon..sun)")
            days.append(i)
    if not days:
        raise ctx.fail(line, "days is empty")
    return tuple(sorted(set(days)))


def _parse_clock(ctx: _Ctx, value: Any, what: str, line: int) -> int:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value) if isinstance(value, str) else None
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (
            int(m.group(1)) == 24 and int(m.group(2)) != 0):
        raise ctx.fail(line, f"{what} must be a local time \"HH:MM\" (00:00..24:00), got {value!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


def band_minutes(band: Band) -> list[int]:
    """Minutes of the week (Monday 00:00 = 0) the band covers."""
    length = (band.end_minute - band.start_minute) % 1440 or 1440
    out: list[int] = []
    for d in band.days:
        base = d * 1440 + band.start_minute
        out.extend((base + k) % MINUTES_PER_WEEK for k in range(length))
    return out


def _parse_band(ctx: _Ctx, raw: Any, line: int, n_tiers: int) -> Band:
    if not isinstance(raw, dict):
        raise ctx.fail(line, "band must be a table")
    ctx.unknown(raw, _BAND_KEYS, line, "[[rate.band]]")
    name = raw.get("name", f"band@{line}")
    if not isinstance(name, str):
        raise ctx.fail(ctx.loc.key(line, "name"), f"band name must be a string, got {name!r}")
    days = _parse_days(ctx, raw.get("days", "all"), ctx.loc.key(line, "days"))
    for k in ("from", "to", "price"):
        if k not in raw:
            raise ctx.fail(line, f"band {name!r} needs {k!r}")
    start = _parse_clock(ctx, raw["from"], "from", ctx.loc.key(line, "from"))
    end = _parse_clock(ctx, raw["to"], "to", ctx.loc.key(line, "to"))
    start, end = start % 1440, end % 1440
    pline = ctx.loc.key(line, "price")
    price = raw["price"]
    if isinstance(price, list):
        if len(price) != n_tiers:
            raise ctx.fail(pline, f"band {name!r} lists {len(price)} prices but the rate has "
                                  f"{n_tiers} tiers")
        prices = tuple(ctx.money(p, f"band {name!r} price", pline) for p in price)
    else:
        if n_tiers != 1:
            raise ctx.fail(pline, f"band {name!r}: the rate has {n_tiers} tiers, give a list of "
                                  f"{n_tiers} prices (one per tier)")
        prices = (ctx.money(price, f"band {name!r} price", pline),)
    return Band(name, days, start, end, prices, line)


def _parse_rate(ctx: _Ctx, raw: Any, i: int) -> Rate:
    line = ctx.loc.table("rate", i)
    if not isinstance(raw, dict):
        raise ctx.fail(line, "rate must be a table")
    ctx.unknown(raw, _RATE_KEYS, line, "[[rate]]")
    for k in ("rating_group", "unit", "price", "increment"):
        if k not in raw:
            raise ctx.fail(line, f"rate is missing {k!r}")
    plan = raw.get("plan", "default")
    ctx.text(plan, "plan", ctx.loc.key(line, "plan"))
    rg_raw = raw["rating_group"]
    if rg_raw == "*":
        rg = WILDCARD
    else:
        rg = ctx.integer(rg_raw, "rating_group (or \"*\")", ctx.loc.key(line, "rating_group"),
                         maximum=MAX_RATING_GROUP)
    unit = raw["unit"]
    if unit not in UNIT_CODES:
        raise ctx.fail(ctx.loc.key(line, "unit"),
                       f"unknown unit {unit!r} (use seconds, octets or events)")
    price = ctx.money(raw["price"], "price", ctx.loc.key(line, "price"))
    increment = ctx.integer(raw["increment"], "increment", ctx.loc.key(line, "increment"),
                            minimum=1, maximum=1 << 40)
    first = ctx.integer(raw.get("first_increment", increment), "first_increment",
                        ctx.loc.key(line, "first_increment"), minimum=1, maximum=1 << 40)
    fee = ctx.money(raw.get("connect_fee", "0"), "connect_fee", ctx.loc.key(line, "connect_fee"))

    tiers: list[Tier] = []
    raw_tiers = raw.get("tier", [])
    if not isinstance(raw_tiers, list):
        raise ctx.fail(ctx.loc.key(line, "tier"), "tier must be an array of tables [[rate.tier]]")
    for j, t in enumerate(raw_tiers):
        tline = ctx.loc.child("rate", i, "tier", j)
        if not isinstance(t, dict):
            raise ctx.fail(tline, "tier must be a table")
        ctx.unknown(t, _TIER_KEYS, tline, "[[rate.tier]]")
        if "from" not in t or "price" not in t:
            raise ctx.fail(tline, "tier needs 'from' (period units) and 'price'")
        start = ctx.integer(t["from"], "tier from", ctx.loc.key(tline, "from"), minimum=1)
        if tiers and start <= tiers[-1].start:
            raise ctx.fail(ctx.loc.key(tline, "from"),
                           f"tiers must be in increasing 'from' order ({start} after {tiers[-1].start})")
        tiers.append(Tier(start, ctx.money(t["price"], "tier price", ctx.loc.key(tline, "price")),
                          tline))

    bands: list[Band] = []
    raw_bands = raw.get("band", [])
    if not isinstance(raw_bands, list):
        raise ctx.fail(ctx.loc.key(line, "band"), "band must be an array of tables [[rate.band]]")
    owner: dict[int, Band] = {}
    if len(raw_bands) > 200:
        raise ctx.fail(line, "more than 200 bands in one rate")
    for j, b in enumerate(raw_bands):
        band = _parse_band(ctx, b, ctx.loc.child("rate", i, "band", j), len(tiers) + 1)
        for minute in band_minutes(band):
            other = owner.get(minute)
            if other is not None:
                d, m = divmod(minute, 1440)
                raise ctx.fail(band.line, f"band {band.name!r} overlaps band {other.name!r} "
                                          f"(line {other.line}) on {DAYS[d]} {m // 60:02d}:{m % 60:02d}")
            owner[minute] = band
        bands.append(band)
    return Rate(plan=plan, rating_group=rg, unit=unit, price=price, increment=increment,
                first_increment=first, connect_fee=fee, bands=tuple(bands), tiers=tuple(tiers),
                index=i, line=line)


def _fraction_ppm(ctx: _Ctx, value: Any, what: str, line: int, scale: int) -> int:
    """Decimal string -> parts per million of `scale` ("0.20" with scale 1 -> 200_000)."""
    if isinstance(value, float):
        raise ctx.fail(line, f"{what} must be a decimal string, not a float")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ctx.fail(line, f"{what} must be a decimal string, got {value!r}")
    try:
        d = Decimal(str(value).strip()) * 1_000_000 / scale
    except InvalidOperation:
        raise ctx.fail(line, f"{what} is not a decimal number: {value!r}") from None
    if not d.is_finite() or d != d.to_integral_value() or d < 0 or d > 1_000_000:
        raise ctx.fail(line, f"{what} must be between 0 and {scale} with at most "
                             f"{6 - len(str(scale)) + 1} decimals, got {value!r}")
    return int(d)


def _parse_plan(ctx: _Ctx, raw: Any, i: int) -> Plan:
    line = ctx.loc.table("plan", i)
    if not isinstance(raw, dict):
        raise ctx.fail(line, "plan must be a table")
    ctx.unknown(raw, _PLAN_KEYS, line, "[[plan]]")
    if "name" not in raw:
        raise ctx.fail(line, "plan is missing 'name'")
    name = ctx.text(raw["name"], "plan name", ctx.loc.key(line, "name"))
    tz = raw.get("timezone", "UTC")
    tzline = ctx.loc.key(line, "timezone")
    try:
        zoneinfo.ZoneInfo(ctx.text(tz, "timezone", tzline))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ctx.fail(tzline, f"unknown timezone {tz!r}") from None
    fee = ctx.money(raw.get("recurring_fee", "0"), "recurring_fee", ctx.loc.key(line, "recurring_fee"))
    tax = _fraction_ppm(ctx, raw.get("tax_rate", "0"), "tax_rate", ctx.loc.key(line, "tax_rate"), 1)
    discounts: list[Discount] = []
    dline = ctx.loc.key(line, "discounts")
    raw_d = raw.get("discounts", [])
    if not isinstance(raw_d, list):
        raise ctx.fail(dline, "discounts must be a list of {threshold, percent} tables")
    for d in raw_d:
        if not isinstance(d, dict) or "threshold" not in d or "percent" not in d:
            raise ctx.fail(dline, "each discount needs threshold and percent, e.g. "
                                  "{threshold = \"50\", percent = \"10\"}")
        ctx.unknown(d, _DISCOUNT_KEYS, dline, "discount")
        discounts.append(Discount(ctx.money(d["threshold"], "discount threshold", dline),
                                  _fraction_ppm(ctx, d["percent"], "discount percent", dline, 100),
                                  dline))
    if len({d.threshold for d in discounts}) != len(discounts):
        raise ctx.fail(dline, "two discounts share a threshold")
    fua_line = ctx.loc.key(line, "final_unit_action")
    fua_name = raw.get("final_unit_action", "terminate")
    if fua_name not in FINAL_UNIT_ACTIONS:
        raise ctx.fail(fua_line, f"unknown final_unit_action {fua_name!r} "
                                 f"(use terminate, redirect or restrict_access)")
    fua = FINAL_UNIT_ACTIONS[fua_name]
    redirect = raw.get("redirect_address")
    rule = raw.get("restriction_filter_rule")
    if redirect is not None:
        ctx.text(redirect, "redirect_address", ctx.loc.key(line, "redirect_address"))
    if rule is not None:
        ctx.text(rule, "restriction_filter_rule", ctx.loc.key(line, "restriction_filter_rule"))
    if fua == 1 and redirect is None:
        raise ctx.fail(fua_line, "final_unit_action = \"redirect\" needs redirect_address")
    if fua == 2 and rule is None:
        raise ctx.fail(fua_line, "final_unit_action = \"restrict_access\" needs restriction_filter_rule")
    return Plan(name=name, timezone=tz, recurring_fee=fee, tax_rate=tax, discounts=tuple(discounts),
                final_unit_action=fua, redirect_address=redirect, restriction_filter_rule=rule,
                line=line)


def parse_tariff(text: str, source: str = "<tariff>") -> Tariff:
    """Parse and validate a tariff; raise TariffError("source:LINE: message") on the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else 1
        raise TariffError(f"{source}:{line}: TOML syntax: {re.sub(r' ?[(]at .*[)]', '', msg)}") from None
    loc = _Locator(text)
    ctx = _Ctx(source, loc)
    ctx.unknown(data, _TOP_KEYS, 0, "the tariff (top level)")
    if "currency" not in data:
        raise ctx.fail(1, "missing currency = \"EUR\" (ISO 4217 code) at the top")
    currency = data["currency"]
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise ctx.fail(loc.key(0, "currency"), f"currency must be a 3-letter ISO 4217 code, got {currency!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ctx.fail(loc.key(0, "description"), "description must be a string")

    plans: dict[str, Plan] = {}
    raw_plans = data.get("plan", [])
    if not isinstance(raw_plans, list):
        raise ctx.fail(loc.key(0, "plan"), "plan must be an array of tables [[plan]]")
    for i, raw in enumerate(raw_plans):
        plan = _parse_plan(ctx, raw, i)
        if plan.name in plans:
            raise ctx.fail(plan.line, f"plan {plan.name!r} is defined twice "
                                      f"(first at line {plans[plan.name].line})")
        plans[plan.name] = plan

    raw_rates = data.get("rate", [])
    if not isinstance(raw_rates, list):
        raise ctx.fail(loc.key(0, "rate"), "rate must be an array of tables [[rate]]")
    if not raw_rates:
        raise ctx.fail(1, "the tariff has no [[rate]]")
    rates: list[Rate] = []
    for i, raw in enumerate(raw_rates):
        rate = _parse_rate(ctx, raw, i)
        rate_plan = plans.get(rate.plan)
        if rate_plan is None:
            rate_plan = plans[rate.plan] = Plan(name=rate.plan, line=rate.line)
        other = rate_plan.rates.get(rate.rating_group)
        if other is not None:
            rg = "*" if rate.rating_group == WILDCARD else rate.rating_group
            raise ctx.fail(rate.line, f"plan {rate.plan!r} already has a rate for rating group {rg} "
                                      f"(line {other.line})")
        rate_plan.rates[rate.rating_group] = rate
        rates.append(rate)
    for plan in plans.values():
        if not plan.rates:
            raise ctx.fail(plan.line, f"plan {plan.name!r} has no [[rate]]")
    return Tariff(currency=currency, plans=plans, rates=rates, source=source, text=text,
                  description=description)


def load_tariff(path: str | Path) -> Tariff:
    """Read and parse a tariff file; unreadable files are a TariffError too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TariffError(f"{p}:0: cannot read: {exc}") from None
    return parse_tariff(text, str(p))


def check_rating_groups(tariff: Tariff,
                        in_use: Mapping[str, Iterable[int]] | Iterable[tuple[str, int]]) -> None:
    """Raise TariffError when a plan lacks a rate for a rating group its subscribers use.

    `in_use` maps plan -> rating groups, or is an iterable of (plan, rating_group) pairs.
    """
    pairs = ([(p, rg) for p, rgs in in_use.items() for rg in rgs]
             if isinstance(in_use, Mapping) else list(in_use))
    for plan_name, rg in sorted(set(pairs)):
        plan = tariff.plans.get(plan_name)
        if plan is None:
            raise TariffError(f"{tariff.source}:1: plan {plan_name!r} is in use but the tariff "
                              f"does not define it")
        if tariff.find(plan_name, rg) is None:
            raise TariffError(f"{tariff.source}:{plan.line or 1}: plan {plan_name!r} has no rate for "
                              f"rating group {rg} (add a [[rate]] or a rating_group = \"*\" rate)")
