"""Dashboard users: add, change, remove, list, and check a password (argon2id hashes only).

`banfeed user …` and the login page both call these; nothing else touches a password.
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import InputError
from ..models import Role, User
from ..store import Store

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" is a denial of service
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

_hasher = PasswordHasher()  # argon2id, RFC 9106's second recommended parameters
# Verified when the name is unknown, so an unknown name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("banfeed: not a password of anyone")


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise InputError(
            f"{name!r} is not a user name: 1 to 64 letters, digits, _ . @ -, "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password is too long: at most {MAX_PASSWORD} characters")
    if not password.isprintable():
        raise InputError("the password has control characters (a pasted newline?)")
    return password


def add_user(
    store: Store,
    name: str,
    role: Role,
    password: str,
    *,
    actor: str,
    now: int,
    replace: bool = False,
) -> User:
    """A new user; ``replace``: a new role and password for an existing one (its sessions
    end). Refuses an existing name without ``replace``."""
    check_name(name)
    hashed = _hasher.hash(check_password(password))
    with store.write() as tx:
        existing = tx.get_user(name)
        if existing is not None and not replace:
            raise InputError(f"user {name} exists; give --replace to set a new password or role")
        if existing is not None:
            tx.update_user(name, role=role, password_hash=hashed)
            return User(name, role, hashed, existing.created, existing.created_by)
        user = User(name, role, hashed, now, actor)
        tx.insert_user(user)
    return user


def remove_user(store: Store, name: str) -> None:
    with store.write() as tx:
        if not tx.delete_user(name):
            raise InputError(f"no user named {name!r} (see `banfeed user list`)")


def list_users(store: Store) -> list[User]:
    with store.read() as tx:
        return tx.list_users()


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The user whose name and password these are, else None (same cost either way)."""
    with store.read() as tx:
        user = tx.get_user(name) if USER_NAME.fullmatch(name) else None
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return None
    return user


def end_sessions(store: Store, name: str) -> None:
    """Sign ``name`` out everywhere (logout): every cookie issued so far is void."""
    with store.write() as tx:
        tx.end_sessions(name)
