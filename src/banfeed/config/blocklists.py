"""``[[blocklists]]``: a list of addresses on a URL, polled beside the devices.

A plain list (one entry a line, as ``banfeed import`` reads) or a CrowdSec LAPI decision
stream; each entry becomes an offense of the device ``import:NAME`` (see
``fortios/blocklist.py``), validated, stored and published like a device's. The root ``Config``
holds the list as :data:`Blocklists`, whose validator checks names against the devices'.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .fields import NAME_PATTERN, FiniteDuration, Size, _Section, beside, read_secret

PREFIX = "import:"  # a list's device name: "import:NAME"
MAX_CAUSE = 64  # as a device's cause text (fortios.parse.MAX_SOURCE_TEXT)
SECRET_KEYS = ("token_env", "token_file", "api_key_env", "api_key_file")


class BlocklistConfig(_Section):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Unique short name; its offenses come from the device import:NAME.",
    )
    url: str = Field(description="URL of the list (http or https), path and query included.")
    format: Literal["lines", "crowdsec"] = Field(
        "lines", description='"lines": one entry a line; "crowdsec": a LAPI decision stream.'
    )
    token_env: str | None = Field(
        None, min_length=1, description="Environment variable holding a Bearer token."
    )
    token_file: Path | None = Field(None, description="File holding a Bearer token.")
    api_key_env: str | None = Field(
        None, min_length=1, description="Environment variable holding a CrowdSec X-Api-Key."
    )
    api_key_file: Path | None = Field(None, description="File holding a CrowdSec X-Api-Key.")
    verify_tls: StrictBool = Field(True, description="Verify the server's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for a private certificate.")
    cause: str = Field(
        "import", min_length=1, max_length=MAX_CAUSE, description="Cause of its offenses."
    )
    ttl: FiniteDuration = Field(
        30 * 86400, description="An entry still listed counts as a new offense once per ttl."
    )
    interval: FiniteDuration | None = Field(
        None, description="Poll at most this often (default: every cycle of [collect])."
    )
    max_entries: int = Field(
        1_000_000, ge=1, le=100_000_000, description="More entries fail the list."
    )
    timeout: FiniteDuration = Field(30, description="Time allowed for one request.")
    max_response: Size = Field(64 * 1024**2, description="Largest answer accepted.")

    @field_validator("url")
    @classmethod
    def _list_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError('write the list URL like "https://lists.example/blocklist.txt"')
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; use token_env or api_key_env")
        if parts.fragment:
            raise ValueError("a URL fragment is never sent; remove it")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return value

    @field_validator("cause")
    @classmethod
    def _cause_text(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError('write the cause as printable text, like "crowdsec"')
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> BlocklistConfig:
        given = [k for k in SECRET_KEYS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(
                f"set at most one of {', '.join(SECRET_KEYS)}; found {', '.join(given)}"
            )
        if self.format == "crowdsec" and not given:
            raise ValueError(
                "a CrowdSec LAPI needs its bouncer key: set api_key_env or api_key_file"
            )
        if self.ttl < 60:
            raise ValueError("ttl: at least a minute (an entry would be a new offense each poll)")
        return self

    @property
    def device(self) -> str:
        """The device name its offenses and status rows carry."""
        return PREFIX + self.name

    def secret_header(self, base_dir: Path) -> tuple[str, SecretStr] | None:
        """The header that authenticates the poll and its secret (``Authorization`` carries it
        as ``Bearer SECRET``); None without one. A ConfigError names the fix."""
        where = f"blocklists[{self.name}]"
        if self.token_env is not None or self.token_file is not None:
            token = read_secret(
                f"{where}.token", None, self.token_env, self.token_file, base_dir, what="token"
            )
            return "Authorization", token  # sent as "Bearer TOKEN"
        if self.api_key_env is not None or self.api_key_file is not None:
            key = read_secret(
                f"{where}.api_key",
                None,
                self.api_key_env,
                self.api_key_file,
                base_dir,
                what="CrowdSec bouncer key",
            )
            return "X-Api-Key", key
        return None


def _unique_names(value: list[BlocklistConfig], info: ValidationInfo) -> list[BlocklistConfig]:
    """Names unique among lists, FortiGates and FortiManagers (``banfeed check`` and the logs
    name them alike)."""
    names = [b.name for b in value]
    others = {d.name for key in ("fortigates", "fortimanagers") for d in info.data.get(key, [])}
    dupes = sorted({n for n in names if names.count(n) > 1 or n in others})
    if dupes:
        raise ValueError(
            "names must be unique across fortigates, fortimanagers and blocklists; repeated: "
            + ", ".join(dupes)
        )
    return value


Blocklists = Annotated[list[BlocklistConfig], AfterValidator(_unique_names)]


def warnings(blocklists: Sequence[BlocklistConfig], base_dir: Path) -> list[str]:
    """What ``banfeed check`` warns about a list: a secret sent in clear, unverified TLS, a
    secret file others can read. Whether it answers is the poll ``check`` makes of it."""
    found = []
    for item in blocklists:
        where = f"blocklists[{item.name}]"
        secret = any(getattr(item, k) is not None for k in SECRET_KEYS)
        if secret and item.url.startswith("http://"):
            found.append(f"{where}.url: plain http sends its secret in clear — use https")
        if not item.verify_tls:
            found.append(
                f"{where}.verify_tls: false — anyone on the path can change the list; "
                "set ca_file to its CA instead"
            )
        for key in ("token_file", "api_key_file"):
            file: Path | None = getattr(item, key)
            if file is None:
                continue
            path = beside(file, base_dir)
            try:
                if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    found.append(f"{where}.{key}: {path} is readable by others — chmod 600")
            except OSError:
                pass  # secret_header reports an unreadable file with its reason
    return found
