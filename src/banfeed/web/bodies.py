"""The JSON body of an ``/api/v1`` write: read, bounded, parsed into its model, or the refusal
to answer (every write route of the API reads it here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, cast

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import InputError

MAX_BODY = 16 * 1024
TARGET_EXAMPLE = '{"target": "…"}'


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Body(Protocol):
    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Any: ...


B = TypeVar("B", bound=Body)


async def json_body(request: Request, model: type[B], example: str) -> B | JSONResponse:
    """A write's JSON object parsed into ``model`` (its ``parse``), or the refusal to answer:
    413 past ``MAX_BODY``, 400 for what is not an object like ``example`` or not valid."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return _error(413, "the body is too large")
    try:
        data = json.loads(raw or b"{}")
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return cast(B, model.parse(data))
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"send a JSON object like {example}: {exc}")
    except InputError as exc:
        return _error(400, str(exc))
