"""The OpenAPI 3 document of ``/api/v1`` (tests/test_web_api.py checks it lists exactly the
API routes the app has). Parameters come from the same pydantic models the handlers parse."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .actions import ActionBody
from .search import STATES, OffenderQuery

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_BODY = {"application/json": {"schema": _ERROR}}


def _answers(description: str, schema: dict[str, Any], *, write: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "401": {"description": "not signed in", "content": _ERROR_BODY},
    }
    if write:
        found["400"] = {"description": "refused input", "content": _ERROR_BODY}
        found["403"] = {
            "description": "not an admin, cross-site, or a missing or wrong X-CSRF-Token",
            "content": _ERROR_BODY,
        }
    return found


def _query_parameters() -> list[dict[str, Any]]:
    params = []
    for name, field in OffenderQuery.model_fields.items():
        schema: dict[str, Any] = {"type": "string"}
        if field.annotation is int:
            schema = {"type": "integer", "default": field.default}
        elif name in ("cause", "device", "vdom"):
            schema = {"type": "array", "items": {"type": "string"}}
        elif name == "state":
            schema = {"type": "string", "enum": list(STATES), "default": "active"}
        elif name == "sort":
            schema = {"type": "string", "default": "ip", "description": "- before: descending"}
        params.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": field.description or name,
                "schema": schema,
                **({"explode": True} if schema.get("type") == "array" else {}),
            }
        )
    return params


def _action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "Needs the admin role, this site's Origin and the X-CSRF-Token header "
            "(the `csrf` of GET /api/v1/me). Writes an audit event with the user as actor.",
            "parameters": [
                {
                    "name": "X-CSRF-Token",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ActionBody.model_json_schema()}},
            },
            "responses": _answers("what was done", {"type": "object"}, write=True),
        }
    }


def document() -> dict[str, Any]:
    obj = {"type": "object"}
    ip = [{"name": "ip", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "banfeed", "version": __version__},
        "components": {
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}}},
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "banfeed_session"}
            },
        },
        "security": [{"session": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3"}},
                }
            },
            "/api/v1/me": {
                "get": {
                    "summary": "The signed-in user, its role and CSRF token",
                    "responses": _answers("the session", obj),
                }
            },
            "/api/v1/overview": {
                "get": {
                    "summary": "Counts, feeds, devices and the last cycle of the overview page",
                    "responses": _answers("the overview", obj),
                }
            },
            "/api/v1/offenders": {
                "get": {
                    "summary": "Search offenders (paged by cursor: pass `next` as `cursor`)",
                    "parameters": _query_parameters(),
                    "responses": _answers("a page: offenders, next, limit, sort", obj),
                }
            },
            "/api/v1/offenders/{ip}": {
                "get": {
                    "summary": "One address: what `banfeed show --format json` prints",
                    "parameters": ip,
                    "responses": _answers("the offender", obj)
                    | {"404": {"description": "unknown and in no feed"}},
                }
            },
            "/api/v1/feeds": {
                "get": {
                    "summary": "Each feed as served (`banfeed feeds --format json` + state)",
                    "responses": _answers("feeds", {"type": "array", "items": obj}),
                }
            },
            "/api/v1/devices": {
                "get": {
                    "summary": "Each device and VDOM: health, last success, error, back-off",
                    "responses": _answers("devices", {"type": "array", "items": obj}),
                }
            },
            "/api/v1/unban": _action("Stop publishing an address or banned network"),
            "/api/v1/ban": _action("Publish an address or network in every feed"),
            "/api/v1/allow": _action("Never publish an address or network"),
        },
    }
