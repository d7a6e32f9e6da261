"""The API's JSON shapes (pydantic): what /openapi.json documents and schemathesis checks.

Money is a decimal string at this edge, as on the command line (micro-units inside); times are
ISO 8601 UTC strings. Names follow TM Forum 654 (Prepay Balance Management) where it fits:
`balance`, `reserved` and `available` amounts, `topups` and `adjustments` as sub-resources of an
account; an account is our own resource (TMF 666 would split it into billing and party accounts).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MONEY = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$"
Status = Literal["active", "suspended", "closed"]
Unit = Literal["seconds", "octets", "events", "money"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountIn(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9]{1,15}$",
                    description="E.164 number, 1-15 digits")
    balance: str = Field("0", pattern=MONEY, description="opening balance, not negative")
    currency: str = Field("EUR", pattern=r"^[A-Za-z]{3}$")
    plan: str = Field("default", min_length=1, max_length=64)
    credit_limit: str = Field("0", pattern=MONEY)
    aliases: list[str] = Field(default_factory=list, max_length=16)


class AccountPatch(Strict):
    plan: str | None = Field(None, min_length=1, max_length=64)
    credit_limit: str | None = Field(None, pattern=MONEY)
    status: Status | None = None


class Bundle(BaseModel):
    id: str
    unit: Unit
    initial: str | None = Field(description="the amount it was sold with (null: not known for "
                                            "a bundle stored before it was kept)")
    remaining: str
    reserved: str
    rating_groups: list[int]
    priority: int
    valid_from: str | None
    expires: str | None


class Account(BaseModel):
    id: str
    currency: str
    balance: str
    reserved: str
    available: str
    credit_limit: str
    plan: str
    status: Status
    aliases: list[str]
    created: str
    updated: str


class AccountPage(BaseModel):
    items: list[Account]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last page")


class Balance(BaseModel):
    account: str
    currency: str
    balance: str
    reserved: str
    available: str
    credit_limit: str
    bundles: list[Bundle]


class MoneyIn(Strict):
    amount: str = Field(pattern=MONEY)
    reason: str | None = Field(None, min_length=1, max_length=200)
    currency: str | None = Field(None, pattern=r"^[A-Za-z]{3}$",
                                 description="refused unless it is the account's currency")


class Credited(BaseModel):
    account: str
    balance: str


class BundleIn(Strict):
    unit: Unit
    amount: str = Field(pattern=r"^[0-9]{1,18}(\.[0-9]{1,6})?$",
                        description="whole units; money: a decimal amount")
    rating_groups: list[int] = Field(default_factory=list, max_length=64)
    valid_from: str | None = Field(None, description="ISO 8601")
    expires: str | None = Field(None, description="ISO 8601, in the future")
    priority: int = Field(0, ge=-(2**31), le=2**31)


class BundleCreated(BaseModel):
    account: str
    bundle: str


class LedgerEntry(BaseModel):
    seq: int
    time: str
    kind: str
    delta: str
    balance: str
    reserved_delta: str
    reserved: str
    session: str | None
    rating_group: int | None
    reason: str


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: int | None


class Tariff(BaseModel):
    version: int
    effective_from: str
    loaded_at: str
    source: str
    currency: str
    sha256: str
    plans: list[str]
    rates: int
    retired_at: str | None
    in_force: bool


class TariffText(Tariff):
    text: str = Field(description="the TOML as loaded")


class TariffChecked(BaseModel):
    valid: bool
    currency: str
    plans: list[str]
    rates: int


class TariffLoaded(BaseModel):
    version: int
    effective_from: str
    in_force: int | None


class AuditEntry(BaseModel):
    position: int
    at: str
    actor: str
    command: str
    account: str | None
    idempotency_key: str | None
    request_id: str | None
    outcome: Any


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: int | None


class Health(BaseModel):
    status: str


EventType = Literal["balance.low", "bundle.threshold", "bundle.exhausted", "credit.limit_reached",
                    "final_unit.granted", "account.suspended", "account.activated",
                    "account.closed", "topup.applied", "invoice.issued", "tariff.activated", "*"]
DeliveryState = Literal["pending", "delivered", "failed", "cancelled"]


class WebhookIn(Strict):
    url: str = Field(min_length=8, max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$")
    events: list[EventType] = Field(min_length=1, max_length=16,
                                    description='event types, or ["*"] for all')
    secret: str | None = Field(None, min_length=16, max_length=200,
                               description="the HMAC key; made by the server when absent")


class Webhook(BaseModel):
    id: str
    url: str
    events: list[str]
    created: str


class WebhookCreated(Webhook):
    secret: str = Field(description="shown once: keep it to check the OCS-Signature header")


class Delivery(BaseModel):
    subscription: str
    event: str
    type: str | None
    account: str | None
    state: DeliveryState
    attempts: int
    next_at: str | None
    last_at: str | None
    last_status: int
    last_error: str


class Event(BaseModel):
    id: str
    type: str
    created: str
    account: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: int | None


class ThresholdIn(Strict):
    low_balance: str | None = Field(pattern=MONEY, description="null clears it")


class Threshold(BaseModel):
    account: str | None = None
    plan: str | None = None
    low_balance: str | None


class SessionGroup(BaseModel):
    rating_group: int
    unit: str
    used_units: int = Field(description="units used so far in this session")
    amount: str = Field(description="money debited so far")
    granted_units: int = Field(description="units of the quota now held (0: none)")
    closed: bool


class Session(BaseModel):
    id: str
    account: str
    subscription: str
    plan: str
    currency: str
    tariff_version: int
    origin_host: str
    started: str
    last_seen: str
    groups: list[SessionGroup]
    aborted_at: str | None = None


class SessionPage(BaseModel):
    items: list[Session]
    next_cursor: str | None = Field(description="more may follow: pass it as `cursor` "
                                                "(a page may be short)")


class Cdr(BaseModel):
    """A CDR as exported (ocs cdr export), money as a decimal string, times ISO 8601."""

    cdr_id: int
    session_id: str
    account_id: str
    subscription_id: str
    plan: str
    rating_group: int
    service_identifier: int | None
    unit: str
    used_units: int
    amount: str
    currency: str
    tariff_version: int
    start_time: str
    end_time: str
    termination_cause: str
    origin_host: str
    bundle_units: int
    request_type: str


class CdrPage(BaseModel):
    items: list[Cdr]
    next_cursor: int | None = Field(description="more may follow: pass it as `cursor` "
                                                "(a page may be short)")


class UsageGroup(BaseModel):
    rating_group: int
    unit: str
    currency: str
    cdrs: int
    used_units: int
    bundle_units: int
    amount: str


class UsageSummary(BaseModel):
    account: str
    since: str | None
    until: str | None
    groups: list[UsageGroup]
