"""The device's token scrubbed from everything the device sends, before anything shows it.

A FortiGate, or a proxy or load balancer in front of it, may echo the request in an error
page or an error object — ``Authorization: Bearer <token>`` included. Every answer's bytes,
the headers quoted in messages (``Location``) and every :class:`DeviceError` the client raises
pass through a :class:`Scrubber` first, so the token can reach no message, log line, ``check``
output or device status in the store; so do the debug lines of httpx and httpcore. The token
is also looked for URL-encoded and with ``/`` JSON-escaped. A token under
:data:`MIN_SCRUBBED` characters is not looked for (replacing two or three letters wherever
they occur would corrupt answers; FortiOS generates 30).
"""

from __future__ import annotations

import logging
from urllib.parse import quote, quote_plus

from ..errors import DeviceError

MASK = "***"
MIN_SCRUBBED = 8


class Scrubber:
    """Removes one secret, in each form it can be echoed in, from bytes, text and errors."""

    def __init__(self, secret: str) -> None:
        forms = {secret, quote(secret, safe=""), quote_plus(secret), secret.replace("/", "\\/")}
        self._forms = sorted(forms, key=len, reverse=True) if len(secret) >= MIN_SCRUBBED else []
        self._bytes = [form.encode() for form in self._forms]

    def body(self, data: bytearray) -> bytearray:
        """``data`` without the secret (the same buffer when it holds none: the usual case
        costs one search of the body per form)."""
        for form in self._bytes:
            if form in data:
                data = data.replace(form, MASK.encode())
        return data

    def text(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return text

    def error(self, exc: DeviceError) -> DeviceError:
        """``exc`` with the secret removed from its message (a last line of defence: what the
        device sent was scrubbed already)."""
        detail = self.text(exc.detail)
        if detail != exc.detail:
            exc.detail = detail
            exc.args = (f"{exc.device}: {detail}",)
        return exc


# httpx and httpcore log at debug what a device sent before the client sees it (httpcore logs
# every response's headers, a redirect's Location echoing the request among them): at `-vv`
# those lines would carry an echoed token. Their loggers scrub each record of every token a
# client of this process has used.
_HTTP_LOGGERS = ("httpx", "httpcore.http11", "httpcore.http2", "httpcore.connection")


class _LogScrubber(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.scrubbers: dict[str, Scrubber] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.scrubbers:
            message = record.getMessage()
            clean = message
            for scrubber in list(self.scrubbers.values()):
                clean = scrubber.text(clean)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_LOG_SCRUBBER = _LogScrubber()
for _name in _HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(_LOG_SCRUBBER)


def scrub_logs(secret: str) -> Scrubber:
    """The scrubber of ``secret``, which the HTTP libraries' log lines are scrubbed of too."""
    scrubber = _LOG_SCRUBBER.scrubbers.get(secret)
    if scrubber is None:
        scrubber = _LOG_SCRUBBER.scrubbers[secret] = Scrubber(secret)
    return scrubber
