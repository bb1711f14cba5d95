"""API tokens (see ``Tx``): SHA-256 digests, roles and use, never a token."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, delete, or_, select, update

from ..models import ApiToken, Role
from .schema import api_tokens


def _token(row: Row[Any]) -> ApiToken:
    return ApiToken(
        row.name,
        Role(row.role),
        row.token_hash,
        row.created,
        row.created_by,
        row.expires,
        row.last_used,
        row.note,
    )


class TokenQueries:
    conn: Connection

    def get_token(self, name: str) -> ApiToken | None:
        row = self.conn.execute(select(api_tokens).where(api_tokens.c.name == name)).first()
        return None if row is None else _token(row)

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        query = select(api_tokens).where(api_tokens.c.token_hash == token_hash)
        row = self.conn.execute(query).first()
        return None if row is None else _token(row)

    def list_tokens(self) -> list[ApiToken]:
        query = select(api_tokens).order_by(api_tokens.c.name)
        return [_token(r) for r in self.conn.execute(query)]

    def insert_token(self, token: ApiToken) -> None:
        self.conn.execute(
            api_tokens.insert().values(
                name=token.name,
                role=token.role.value,
                token_hash=token.token_hash,
                created=token.created,
                created_by=token.created_by,
                expires=token.expires,
                last_used=token.last_used,
                note=token.note,
            )
        )

    def touch_token(self, name: str, now: int, *, every: int) -> bool:
        """Set ``last_used`` to ``now`` unless it was set within ``every`` seconds (so a busy
        script costs one write a minute, and two replicas racing write once)."""
        query = (
            update(api_tokens)
            .where(api_tokens.c.name == name)
            .where(or_(api_tokens.c.last_used.is_(None), api_tokens.c.last_used <= now - every))
            .values(last_used=now)
        )
        return bool(self.conn.execute(query).rowcount)

    def delete_token(self, name: str) -> bool:
        query = delete(api_tokens).where(api_tokens.c.name == name)
        return bool(self.conn.execute(query).rowcount)
