"""Per-flow tokens: the secret a client shows to join and command one flow.

A token is an HMAC of the flow id keyed with the installation's secret (kept in the journal's
meta table under `TOKEN_SECRET_KEY`), so nothing per flow has to be stored and every node
sharing the journal computes the same token. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "pft_"  # noqa: S105 (a prefix, not a secret)
TOKEN_SECRET_KEY = "token_secret"  # noqa: S105 (the meta key naming the secret)


def new_token_secret() -> str:
    """A fresh installation secret (the default stored on first start)."""
    return secrets.token_hex(32)


def flow_token(secret: str, flow_id: str) -> str:
    """The token for `flow_id`: "pft_" + hex HMAC-SHA256(secret, flow_id)."""
    digest = hmac.new(secret.encode(), flow_id.encode(), hashlib.sha256).hexdigest()
    return TOKEN_PREFIX + digest


def verify_token(secret: str, flow_id: str, token: str) -> bool:
    """Whether `token` is `flow_id`'s token, compared in constant time."""
    return hmac.compare_digest(flow_token(secret, flow_id).encode(), token.encode())
