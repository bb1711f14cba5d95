"""The one exception tree of banfeed.

```
BanfeedError
├── ConfigError            bad or missing configuration (exit code 2)
├── InputError             a user-supplied value that cannot be used (exit code 2)
├── StoreError             the store cannot be opened, read or written
│   ├── SchemaError        the store's schema is missing or older than the code
│   ├── ConflictError      a concurrent writer won (unique key, deadlock): retry the transaction
│   └── StoreBusyError     another process held SQLite's write lock past the busy timeout
├── ExportError            a feed file cannot be written
└── DeviceError            one FortiGate could not be polled (that device alone fails)
    ├── DeviceUnreachable      connection refused, reset or DNS failure
    ├── DeviceTimeout          no answer within the device's timeout
    ├── DeviceTLSError         certificate or handshake failure
    ├── DeviceBackedOff        not polled: still in its back-off window after 401/429
    ├── DeviceConfigError      not polled: its token cannot be read
    └── DeviceHTTPError        an HTTP status other than 200
    │   ├── DeviceAuthError        401: bad or missing token, or not a trusted host
    │   ├── DevicePermissionError  403: the API admin lacks a permission
    │   ├── DeviceNotFoundError    404: endpoint or VDOM unknown
    │   ├── DeviceUnavailableError 424: feature unavailable
    │   ├── DeviceRateLimited      429: source locked out after auth failures
    │   └── DeviceServerError      5xx
    ├── DeviceBadResponse      200 but not JSON, wrong shape, or too large
    └── DeviceInternalError    polling or parsing it raised something unexpected (a bug):
                               that device fails alone, with the traceback logged
```
Only ``cli`` turns these into messages and exit codes, only ``server`` into HTTP statuses.
Every message says what happened, where, and what to do.
"""

from __future__ import annotations


class BanfeedError(Exception):
    """Base of every error banfeed raises on purpose."""


class ConfigError(BanfeedError):
    """The configuration is invalid; the message names the key path and the fix."""


class InputError(BanfeedError):
    """A value given by a user (argument, file line, API body) cannot be used."""


class StoreError(BanfeedError):
    """The store cannot be opened, read or written."""


class SchemaError(StoreError):
    """The store has no schema, or an older one than this code needs."""


class ConflictError(StoreError):
    """Another writer (a replica) changed the same rows first; the transaction can be retried."""


class StoreBusyError(StoreError):
    """Another process held the SQLite store's write lock past the busy timeout; nothing of
    the transaction was written, and it can be retried."""


class ExportError(BanfeedError):
    """A feed could not be written to its destination."""


class DeviceError(BanfeedError):
    """Polling one FortiGate failed. ``kind`` is a short stable label for status and metrics."""

    kind = "error"

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.detail = message


class DeviceUnreachable(DeviceError):
    kind = "unreachable"


class DeviceTimeout(DeviceError):
    kind = "timeout"


class DeviceTLSError(DeviceError):
    kind = "tls"


class DeviceBackedOff(DeviceError):
    kind = "backoff"


class DeviceConfigError(DeviceError):
    kind = "config"


class DeviceHTTPError(DeviceError):
    kind = "http"

    def __init__(self, device: str, message: str, status: int, retry_after: float | None = None):
        super().__init__(device, message)
        self.status = status
        self.retry_after = retry_after


class DeviceAuthError(DeviceHTTPError):
    kind = "auth"


class DevicePermissionError(DeviceHTTPError):
    kind = "permission"


class DeviceNotFoundError(DeviceHTTPError):
    kind = "not_found"


class DeviceUnavailableError(DeviceHTTPError):
    kind = "unavailable"


class DeviceRateLimited(DeviceHTTPError):
    kind = "rate_limited"


class DeviceServerError(DeviceHTTPError):
    kind = "server_error"


class DeviceBadResponse(DeviceError):
    kind = "bad_response"


class DeviceInternalError(DeviceError):
    kind = "internal"
