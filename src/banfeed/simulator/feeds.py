"""Threat feeds ("config system external-resource", type address): what a device holds.

Entries are parsed and counted like FortiOS does, pull feeds fetched like the FortiGate's curl.
``SimDevice`` gets the methods below from ``_ThreatFeeds``; ``feed_endpoints`` serves them.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_FETCH_TIMEOUT = 5.0


@dataclass
class _Feed:
    url: str
    username: str | None
    password: str | None
    push: bool
    verify: ssl.SSLContext | bool
    entries: dict[str, str] = field(default_factory=dict)  # canonical -> text as received
    invalid: list[str] = field(default_factory=list)  # invalid lines since the last snapshot
    overflow: int = 0  # valid entries dropped over the device's feed_limit
    http_status_code: int = 0  # of the last fetch; 0: connection failed, or never fetched
    etag: str | None = None
    last_content_update_time: float | None = None
    conn_attempt_time: float | None = None
    fetches: int = 0
    refresh_every: float | None = None  # seconds between fetches; None: only refresh_feed()
    next_refresh: float | None = None  # when the refresher fetches it next
    refresh_rate: int = 5  # as configured (minutes), shown by the CMDB
    server_identity_check: str = "none"

    def update(self, texts: Iterable[str], command: str, limit: int) -> None:
        """Apply lines or pushed entries; invalid ones are counted, never fatal."""
        if command == "snapshot":
            self.entries, self.invalid, self.overflow = {}, [], 0
        for text in texts:
            key = _feed_entry(text)
            if key is None:
                self.invalid.append(text)
            elif command == "remove":
                self.entries.pop(key, None)
            elif key not in self.entries:  # duplicates collapse (a guess; not counted)
                if len(self.entries) < limit:
                    self.entries[key] = text
                else:  # FortiOS drops the newest entries over the limit
                    self.overflow += 1


def _feed_entry(text: str) -> str | None:
    """Canonical form of one feed line (IP, CIDR/prefix or a-b range), None if invalid."""
    if "%" in text:  # ipaddress accepts IPv6 scope ids; a FortiGate surely does not
        return None
    try:
        if "-" in text:
            first, _, last = text.partition("-")
            low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
            if low.version != high.version or int(low) > int(high):
                return None
            return f"{low}-{high}"
        if "/" in text:
            # Host bits may be set: the v7.4.2 fixture lists "172.200.1.4/16" as valid.
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _check_loopback(url: str) -> None:
    """Refuse any feed URL that could make the simulator talk to another machine."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"bad feed URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or parsed.host not in _LOOPBACK_HOSTS:
        raise ValueError(f"feed URL {url!r}: only http(s) to {_LOOPBACK_HOSTS} is fetched")


def _fetch(feed: _Feed, url: str) -> tuple[int, str | None, bytes | None]:
    """GET the feed like a FortiGate's curl: (status, ETag, body if 2xx); status 0: no answer."""
    headers = {"User-Agent": "curl/7.58.0", "Accept": "*/*"}
    if feed.etag is not None:
        headers["If-None-Match"] = feed.etag
    auth = None if feed.username is None else httpx.BasicAuth(feed.username, feed.password or "")
    # trust_env=False: an HTTP(S)_PROXY in the environment must not route this off the host.
    with httpx.Client(timeout=_FETCH_TIMEOUT, verify=feed.verify, trust_env=False) as client:
        # curl sends no Accept-Encoding unless --compressed (the FortiGate's flags: unverified).
        del client.headers["Accept-Encoding"]
        try:
            response = client.get(url, headers=headers, auth=auth)
        except httpx.HTTPError:
            return 0, None, None
    if not response.is_success:
        return response.status_code, None, None
    return response.status_code, response.headers.get("etag"), response.content


class _ThreatFeeds:
    """The threat feeds of a ``SimDevice``, which holds the fields declared here."""

    _lock: threading.Lock
    _feeds: dict[str, _Feed]
    clock: Callable[[], float]
    feed_limit: int

    def add_feed(
        self,
        name: str,
        *,
        url: str,
        username: str | None = None,
        password: str | None = None,
        push: bool = False,
        verify: ssl.SSLContext | bool = True,
        refresh_every: float | None = None,
    ) -> None:
        """Configure an IP threat feed; an existing one of that name is replaced and empty.

        ``push``: ``set update-method push`` (7.2.1+), filled only by the ``dynamic`` endpoint.
        ``verify`` is for HTTPS feeds (a context trusting a test CA, or False).
        ``refresh_every``: fetch it at once, then every so many seconds, like a FortiGate's
        ``refresh-rate`` (a running simulator's refresher does it: see ``refresh_due``);
        None: only when ``refresh_feed`` is called.
        """
        feed = _Feed(url, username, password, push, verify, refresh_every=refresh_every)
        if refresh_every is not None and not push:
            _check_loopback(url)  # refused now, not in the refresher's thread later
            feed.next_refresh = self.clock()
        with self._lock:
            self._feeds[name] = feed

    def remove_feed(self, name: str) -> bool:
        """Delete a threat feed (``delete`` in ``config system external-resource``)."""
        with self._lock:
            return self._feeds.pop(name, None) is not None

    def feed_names(self) -> list[str]:
        with self._lock:
            return sorted(self._feeds)

    def refresh_due(self) -> list[str]:
        """Fetch every pull feed whose refresh time has come; the names fetched. A feed deleted
        or replaced while its fetch runs gets the answer on the object it no longer uses."""
        now = self.clock()
        with self._lock:
            due = [
                (name, feed)
                for name, feed in self._feeds.items()
                if feed.next_refresh is not None and feed.next_refresh <= now
            ]
            for _name, feed in due:
                assert feed.refresh_every is not None  # next_refresh is set only with it
                feed.next_refresh = now + feed.refresh_every
        for _name, feed in due:
            self._refresh(feed)  # push feeds never get a next_refresh; URLs checked at add
        return [name for name, _feed in due]

    def refresh_feed(self, name: str) -> int:
        """Fetch a pull feed now, as the FortiGate does every refresh-rate; returns the status.

        2xx: the body replaces the entries (an empty body empties the feed). 304: nothing
        changes. Anything else, or 0 for no answer: the last good entries are kept. Raises
        KeyError for an unknown feed, ValueError for a push feed or a non-loopback URL.
        """
        with self._lock:
            feed = self._feeds[name]
        if feed.push:
            raise ValueError(f"feed {name!r} is a push feed: nothing to fetch")
        _check_loopback(feed.url)
        return self._refresh(feed)

    def _refresh(self, feed: _Feed) -> int:
        attempt = self.clock()
        status, etag, body = _fetch(feed, feed.url)
        lines = None if body is None else body.decode("utf-8", "replace").split("\n")
        with self._lock:
            feed.fetches += 1
            feed.conn_attempt_time, feed.http_status_code = attempt, status
            if lines is not None:
                feed.etag = etag
                texts = filter(None, (line.strip() for line in lines))  # blank lines ignored
                feed.update(texts, "snapshot", self.feed_limit)
                feed.last_content_update_time = self.clock()
        return status

    def feed_entries(self, name: str) -> set[str]:
        """Valid entries of a feed, canonical (ipaddress text; ranges as "a-b")."""
        with self._lock:
            return set(self._feeds[name].entries)

    def feed_status(self, name: str) -> dict[str, object]:
        """The feed's counters; ``overflow`` is the number of entries dropped, not a bool."""
        with self._lock:
            feed = self._feeds[name]
            return {
                "push": feed.push,
                "url": feed.url,
                "valid_count": len(feed.entries),
                "invalid_count": len(feed.invalid),
                "overflow": feed.overflow,
                "http_status_code": feed.http_status_code,
                "etag": feed.etag,
                "last_content_update_time": feed.last_content_update_time,
                "conn_attempt_time": feed.conn_attempt_time,
                "fetches": feed.fetches,
            }

    def _push(self, commands: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        with self._lock:
            for name, command, entries in commands:
                feed = self._feeds[name]
                feed.update(entries, command, self.feed_limit)
                feed.last_content_update_time = self.clock()
