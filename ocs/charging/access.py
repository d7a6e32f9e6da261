"""API keys and roles: who may run which command. The engine checks them in the command's own
transaction, so a key revoked by a command that has returned refuses the very next request.

A key's secret is `ocs_` + 43 url-safe characters (32 random bytes), shown once when created; the
store holds only its SHA-256 (the secret has 256 bits of entropy, so a plain hash is enough: no
salt or stretching, and lookup is one get by the hash). The record: name, role, account (the one
account a `selfcare` key may see), created, revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from balance.schema import API_KEYS

ROLES: Final = ("admin", "crm", "billing", "readonly", "selfcare")
ANY_ROLE: Final = frozenset(ROLES)
PREFIX: Final = "ocs_"


@dataclass(slots=True)
class ApiKey:
    name: str
    role: str
    account: str | None
    created: int
    revoked: int | None = None
    digest: bytes = b""

    def pack(self) -> bytes:
        out: bytes = msgpack.packb([self.name, self.role, self.account, self.created, self.revoked],
                                   use_bin_type=True)
        return out

    @classmethod
    def unpack(cls, digest: bytes, raw: bytes) -> ApiKey:
        name, role, account, created, revoked = msgpack.unpackb(raw, raw=False)
        return cls(name, role, account, created, revoked, bytes(digest))

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "account": self.account,
                "created": self.created, "revoked": self.revoked, "id": self.digest.hex()[:12]}


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def find(txn: Any, dbs: dict[str, Any], key_digest: bytes) -> ApiKey | None:
    """The live key with this digest (None: unknown or revoked). The get is by the digest; the
    compare_digest after it keeps the check constant-time in the stored value too."""
    if not isinstance(key_digest, bytes) or len(key_digest) != 32:
        return None
    raw = txn.get(key_digest, db=dbs[API_KEYS])
    if raw is None:
        return None
    key = ApiKey.unpack(key_digest, raw)
    if key.revoked is not None or not hmac.compare_digest(key.digest, key_digest):
        return None
    return key


def all_keys(txn: Any, dbs: dict[str, Any]) -> list[ApiKey]:
    return sorted((ApiKey.unpack(k, v) for k, v in txn.cursor(db=dbs[API_KEYS])),
                  key=lambda k: (k.created, k.name))
