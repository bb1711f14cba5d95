"""Dashboard users (see ``Tx``): hashes and roles, never passwords."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, delete, select, update

from ..models import Role, User
from .schema import users


def _user(row: Row[Any]) -> User:
    return User(
        row.name, Role(row.role), row.password_hash, row.created, row.created_by, row.session_epoch
    )


class UserQueries:
    conn: Connection

    def get_user(self, name: str) -> User | None:
        row = self.conn.execute(select(users).where(users.c.name == name)).first()
        return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        return [_user(r) for r in self.conn.execute(select(users).order_by(users.c.name))]

    def insert_user(self, user: User) -> None:
        self.conn.execute(
            users.insert().values(
                name=user.name,
                role=user.role.value,
                password_hash=user.password_hash,
                created=user.created,
                created_by=user.created_by,
                session_epoch=user.session_epoch,
            )
        )

    def update_user(self, name: str, *, role: Role, password_hash: str) -> bool:
        """A new role and hash; every session of the user ends (its epoch grows)."""
        query = (
            update(users)
            .where(users.c.name == name)
            .values(
                role=role.value,
                password_hash=password_hash,
                session_epoch=users.c.session_epoch + 1,
            )
        )
        return bool(self.conn.execute(query).rowcount)

    def end_sessions(self, name: str) -> bool:
        """Void every session cookie of ``name`` issued so far (logout)."""
        query = (
            update(users)
            .where(users.c.name == name)
            .values(session_epoch=users.c.session_epoch + 1)
        )
        return bool(self.conn.execute(query).rowcount)

    def delete_user(self, name: str) -> bool:
        return bool(self.conn.execute(delete(users).where(users.c.name == name)).rowcount)
