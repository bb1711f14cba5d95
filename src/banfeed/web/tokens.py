"""API tokens for scripts: add (the token is shown once), list, revoke, and check one.

A token is ``bft_`` and 256 random bits (``secrets.token_urlsafe(32)``). The store keeps its
SHA-256, found by that digest: a slow password hash (argon2) protects guessable secrets, and a
token is not guessable, so a plain digest loses nothing and costs nothing per request. The digest
that finds a row is compared again in constant time; the token text is never logged or stored.
`banfeed token …` and the API's ``Authorization: Bearer`` both call these.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from ..errors import InputError
from ..models import ApiToken, Role
from ..store import Store
from ..timeutil import iso
from .accounts import check_name

log = logging.getLogger("banfeed.dashboard")

PREFIX = "bft_"
MAX_TOKEN = 128  # a longer Authorization value is no token of ours: refused before hashing
MAX_NOTE = 500
TOUCH_EVERY = 60  # last_used is written at most once a minute per token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(
    store: Store,
    name: str,
    role: Role,
    *,
    expires_in: int | None,
    note: str | None,
    actor: str,
    now: int,
) -> tuple[ApiToken, str]:
    """A new token: its record and the token itself (shown once, kept nowhere)."""
    check_name(name)
    if note is not None and (len(note) > MAX_NOTE or not note.isprintable()):
        raise InputError(f"--note: at most {MAX_NOTE} printable characters")
    secret = PREFIX + secrets.token_urlsafe(32)
    expires = None if expires_in is None else now + expires_in
    token = ApiToken(name, role, digest(secret), now, actor, expires, None, note or None)
    with store.write() as tx:
        if tx.get_token(name) is not None:
            raise InputError(
                f"a token named {name} exists; revoke it first (`banfeed token revoke {name}`)"
            )
        tx.insert_token(token)
    return token, secret


def list_tokens(store: Store) -> list[ApiToken]:
    with store.read() as tx:
        return tx.list_tokens()


def revoke_token(store: Store, name: str) -> None:
    """Delete token ``name``: its next request is refused."""
    with store.write() as tx:
        if not tx.delete_token(name):
            raise InputError(f"no token named {name!r} (see `banfeed token list`)")


def authenticate_token(store: Store, presented: str, now: int) -> ApiToken | None:
    """The live token whose text this is, else None (unknown, malformed or expired). Records
    its use (at most once a minute)."""
    if not presented.startswith(PREFIX) or len(presented) > MAX_TOKEN:
        return None
    if not presented.isascii() or not presented.isprintable():
        return None
    wanted = digest(presented)
    with store.read() as tx:
        token = tx.token_by_hash(wanted)
    if token is None or not hmac.compare_digest(token.token_hash, wanted):
        return None
    if token.expired(now):
        log.warning("API token %s expired at %s: refused", token.name, iso(token.expires))
        return None
    if token.last_used is None or now - token.last_used >= TOUCH_EVERY:
        with store.write() as tx:
            tx.touch_token(token.name, now, every=TOUCH_EVERY)
    return token
