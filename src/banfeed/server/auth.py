"""Who may fetch a feed — and ``/metrics`` and the status page (``[server.status]``): HTTP
basic or bearer credentials, and consumer networks."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ..config import FeedAuthConfig, ServerConfig, read_secret
from ..errors import InputError
from ..models import AuthKind
from ..net import IPNetwork, NetworkSet, parse_address

STATUS_REALM = "banfeed status"


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

    def refusal(self, host: str, header: str | None) -> int | None:
        """403 for a client outside ``allow_from`` (whatever its credentials: checked first),
        401 for missing or wrong credentials; None: it may."""
        if not self.client_allowed(host):
            return 403
        return None if self.authorized(header) else 401

    def challenge(self, feed: str) -> str:
        return self.challenge_for(f"banfeed feed {feed}")

    def challenge_for(self, realm: str) -> str:
        quoted = f'realm="{realm}"'
        return f'Basic {quoted}, charset="UTF-8"' if self.kind == "basic" else f"Bearer {quoted}"


def access_from(
    auth: FeedAuthConfig,
    allow_from: Sequence[IPNetwork],
    where: str,
    base_dir: Path,
    senders: str = "clients",
) -> FeedAccess:
    """The access an ``auth`` table and its networks describe, its secret read now: a missing
    one is a ConfigError naming ``where`` and what ``senders`` send (so nothing is served
    without its protection). Feeds and ``[server.status]`` alike."""
    secret = None
    if auth.type == "basic":
        secret = read_secret(
            f"{where}.password",
            auth.password,
            auth.password_env,
            auth.password_file,
            base_dir,
            what=f"password {senders} send",
        )
    elif auth.type == "bearer":
        secret = read_secret(
            f"{where}.token",
            auth.token,
            auth.token_env,
            auth.token_file,
            base_dir,
            what=f"token {senders} send",
        )
    return FeedAccess(AuthKind(auth.type), auth.username, secret, tuple(allow_from))


def status_access(server: ServerConfig, base_dir: Path) -> FeedAccess:
    """Who may fetch ``/metrics`` and ``/`` (``[server.status]``; open by default)."""
    status = server.status
    return access_from(status.auth, status.allow_from, "server.status.auth", base_dir)


def real_client(peer: str, forwarded_for: list[str], trusted: tuple[IPNetwork, ...]) -> str:
    """The address a request is judged on: the connection's peer, unless the peer is one of
    ``trusted`` (``[server] trusted_proxies``); then the right-most ``X-Forwarded-For`` hop that
    is not a trusted proxy (each proxy appends the address it received from, so hops left of the
    first untrusted one are the client's to invent). A hop that is no address is returned as
    ``"invalid"``, which no ``allow_from`` admits."""
    if not trusted or not forwarded_for or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            try:
                return str(parse_address(hop))
            except InputError:
                return "invalid"
    return str(parse_address(hops[0])) if hops else peer


def _within(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = parse_address(host)
    except InputError:
        return False
    return NetworkSet((n, True) for n in networks).match(address) is not None
