"""Which account a CCR charges: its Subscription-Ids (or User-Name) resolved through the aliases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import constants as C

if TYPE_CHECKING:
    from balance.records import Account
    from balance.views import View
    from protocol.records import CCR


def resolve_account(view: View, ccr: CCR) -> tuple[Account | None, str]:
    """(account, subscription id) for the first Subscription-Id that resolves, E.164 first."""
    ids = sorted(ccr.subscription_ids, key=lambda t: (t[0] != C.SubscriptionIdType.END_USER_E164, t[0]))
    if not ids and ccr.user_name:
        ids = [(C.SubscriptionIdType.END_USER_NAI, ccr.user_name)]
    for _kind, data in ids:
        account_id = view.resolve(data)
        if account_id is not None:
            return view.get_account(account_id), data
    return None, (ids[0][1] if ids else "")
