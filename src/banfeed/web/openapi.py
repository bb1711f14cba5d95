"""The OpenAPI 3 document of ``/api/v1`` (tests/test_web_api.py checks it lists exactly the
API routes the app has). Parameters come from the same pydantic models the handlers parse."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .actions import ActionBody
from .feedapi import FeedActionBody
from .lists import AllowQuery, BanQuery, EventQuery
from .overview import RANGES
from .search import STATES, OffenderQuery

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_BODY = {"application/json": {"schema": _ERROR}}


def _answers(description: str, schema: dict[str, Any], *, write: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "401": {
            "description": "not signed in, or an unknown, revoked or expired API token "
            "(WWW-Authenticate: Bearer)",
            "content": _ERROR_BODY,
        },
    }
    if write:
        found["400"] = {"description": "refused input", "content": _ERROR_BODY}
        found["403"] = {
            "description": "not an admin (user or token), or with a session: cross-site, or "
            "a missing or wrong X-CSRF-Token",
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
            "description": "Needs the admin role. With a session: this site's Origin and the "
            "X-CSRF-Token header (the `csrf` of GET /api/v1/me); with an API token "
            "(Authorization: Bearer): neither. Writes an audit event with the user, or "
            "`token:NAME`, as actor.",
            "parameters": [
                {
                    "name": "X-CSRF-Token",
                    "in": "header",
                    "required": False,
                    "description": "With a session cookie: required. With a token: ignored.",
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


def _feed_paths() -> dict[str, Any]:
    """``/api/v1/feeds/{name}…``: one feed, its versions, a diff, and its three writes."""
    obj = {"type": "object"}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    missing = {"404": {"description": "no feed of that name", "content": _ERROR_BODY}}
    bad = {"400": {"description": "a bad feed name or version", "content": _ERROR_BODY}}

    def number(key: str, description: str) -> dict[str, Any]:
        schema = {"type": "integer", "minimum": 1}
        return {"name": key, "in": "query", "description": description, "schema": schema}

    paths: dict[str, Any] = {
        "/api/v1/feeds/{name}": {
            "get": {
                "summary": "One feed: its state as served (as in GET /api/v1/feeds) and "
                "its `definition`",
                "parameters": [name],
                "responses": _answers("the feed", obj) | bad | missing,
            }
        },
        "/api/v1/feeds/{name}/versions": {
            "get": {
                "summary": "Published versions, newest first (`banfeed feeds history`)",
                "parameters": [name, number("limit", "How many (default 20, at most 1000).")],
                "responses": _answers("feed, served, versions, more", obj) | bad | missing,
            }
        },
        "/api/v1/feeds/{name}/diff": {
            "get": {
                "summary": "Lines added and removed between two versions (`feeds diff`)",
                "parameters": [
                    name,
                    number("old", "Default: the version before `new`."),
                    number("new", "Default: the served version."),
                ],
                "responses": _answers("feed, old, new, added, removed", obj) | bad | missing,
            }
        },
    }
    for action, summary in (
        ("approve", "Release the mass-drop guard's hold: publish the current content"),
        ("rollback", "Serve `version` (a pin) until released"),
        ("release", "Stop serving the pinned version: publish the current build"),
    ):
        item = _action(summary)
        post = item["post"]
        post["parameters"] = [name, *post["parameters"]]
        post["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": FeedActionBody.model_json_schema()}},
        }
        post["responses"] |= missing
        paths[f"/api/v1/feeds/{{name}}/{action}"] = item
    return paths


def _list_paths() -> dict[str, Any]:
    """The allowlist, bans, events and the CSV of a search (``lists_api``)."""
    obj = {"type": "object"}
    csv = {"text/csv": {"schema": {"type": "string"}}}
    return {
        "/api/v1/allowlist": {
            "get": {
                "summary": "The config's allowlist and protect ranges, and the store's entries",
                "parameters": AllowQuery.parameters(),
                "responses": _answers("{allowlist: [network, source, origin, …]}", obj),
            }
        },
        "/api/v1/allowlist/remove": _action(
            "Remove a store allowlist entry (`banfeed allow remove`; add: POST /api/v1/allow)"
        ),
        "/api/v1/bans": {
            "get": {
                "summary": "Manual and imported bans (`banfeed bans`), paged by offset",
                "parameters": BanQuery.parameters(),
                "responses": _answers("{bans, total, next, limit}", obj),
            }
        },
        "/api/v1/events": {
            "get": {
                "summary": "The audit log, newest first (pass `next` as `cursor`)",
                "parameters": EventQuery.parameters(),
                "responses": _answers("{events, next, limit, window_full}", obj),
            }
        },
        "/api/v1/offenders.csv": {
            "get": {
                "summary": "Every match of an offenders search as CSV (the search's parameters)",
                "parameters": OffenderQuery.parameters(),
                "responses": _answers("CSV with a header row", obj)
                | {"200": {"description": "CSV with a header row", "content": csv}},
            }
        },
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
                "session": {"type": "apiKey", "in": "cookie", "name": "banfeed_session"},
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token of `banfeed token add` (bft_…)",
                },
            },
        },
        "security": [{"session": []}, {"token": []}],
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
                    "summary": "Counts, feeds (with consumers), devices and the last cycles of "
                    "the overview page",
                    "responses": _answers("the overview", obj),
                }
            },
            "/api/v1/alerts": {
                "get": {
                    "summary": "Alerts firing now and the last notices sent (newest first), "
                    "each as the webhook's record (docs/alerts.md)",
                    "responses": _answers("firing: [alert], recent: [alert]", obj),
                }
            },
            "/api/v1/overview/series": {
                "get": {
                    "summary": "Offenses, new offenders and expiries per time bucket, and the "
                    "top causes, devices and VDOMs of the range",
                    "parameters": [
                        {
                            "name": "range",
                            "in": "query",
                            "required": False,
                            "description": "24h (hourly), 7d (6-hourly) or 30d (daily)",
                            "schema": {"type": "string", "enum": list(RANGES), "default": "24h"},
                        }
                    ],
                    "responses": _answers(
                        "parallel arrays: time (bucket starts, epoch seconds), offenses, "
                        "new_offenders, expiries; top: causes, devices, vdoms",
                        obj,
                    )
                    | {"400": {"description": "an unknown range", "content": _ERROR_BODY}},
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
            "/api/v1/sources": {
                "get": {
                    "summary": "Each source (FortiGate, FortiManager and its devices, list) with "
                    "its status; AbuseIPDB reporting; the alert targets",
                    "responses": _answers("sources, abuseipdb, alerts", obj),
                }
            },
            "/api/v1/unban": _action("Stop publishing an address or banned network"),
            "/api/v1/unban-everywhere": _action(
                "Unban, then release the offenders from every FortiGate's quarantine "
                "(`devices`: each device's outcome)"
            ),
            "/api/v1/ban": _action("Publish an address or network in every feed"),
            "/api/v1/allow": _action("Never publish an address or network"),
            **_feed_paths(),
            **_list_paths(),
        },
    }
