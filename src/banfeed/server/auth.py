"""Who may fetch a feed: HTTP basic or bearer credentials, and consumer networks."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from ..errors import InputError
from ..net import IPNetwork, NetworkSet, parse_address


@dataclass(frozen=True)
class FeedAccess:
    """Credentials and networks for one feed; ``kind`` is none, basic or bearer."""

    kind: str = "none"
    username: str | None = None
    secret: SecretStr | None = None  # the basic password or the bearer token
    allow_from: tuple[IPNetwork, ...] = ()

    def __repr__(self) -> str:
        return f"FeedAccess(kind={self.kind!r}, username={self.username!r})"

    def client_allowed(self, host: str | None) -> bool:
        if not self.allow_from:
            return True
        try:
            address = parse_address(host or "")
        except InputError:
            return False
        return NetworkSet((n, True) for n in self.allow_from).match(address) is not None

    def authorized(self, header: str | None) -> bool:
        """Constant-time check of an ``Authorization`` header against this feed's secret."""
        if self.kind == "none":
            return True
        if not header or self.secret is None:
            return False
        scheme, _, value = header.partition(" ")
        expected = self.secret.get_secret_value().encode()
        if self.kind == "bearer":
            return scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), expected
            )
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, (self.username or "").encode())
        password_ok = hmac.compare_digest(password, expected)
        return bool(sep) and user_ok and password_ok

    def challenge(self, feed: str) -> str:
        realm = f'realm="banfeed feed {feed}"'
        return f'Basic {realm}, charset="UTF-8"' if self.kind == "basic" else f"Bearer {realm}"
