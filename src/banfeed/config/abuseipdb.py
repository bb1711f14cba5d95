"""``[abuseipdb]``: report new offenders to AbuseIPDB (opt-in).

What may be said is decided here: the categories each cause maps to and a comment template
whose only fields are safe ones (the cause, the offense count, first and last seen dates).
Device names, VDOMs and our own addresses have no field, and the reporter scrubs the rendered
comment of them as well (``banfeed.sharing.abuseipdb``).
"""

from __future__ import annotations

import stat
import string
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, StrictBool, field_validator, model_validator

from .fields import FiniteDuration, Network, _Section, beside, read_secret

API_URL = "https://api.abuseipdb.com/api/v2"
CATEGORIES = range(1, 24)  # AbuseIPDB's category numbers (3 Fraud Orders … 23 IoT Targeted)
MIN_REPEAT = 15 * 60  # AbuseIPDB takes one report of an address per reporter each 15 minutes
COMMENT_FIELDS = frozenset({"cause", "offenses", "first_seen", "last_seen"})
MAX_COMMENT = 1024  # longer comments are cut by the API
DEFAULT_CATEGORIES: dict[str, list[int]] = {"IPS": [15, 21], "DoS": [4], "AV": [20], "APP": [15]}
DEFAULT_COMMENT = (
    "banfeed: {cause} offender, {offenses} offenses, first seen {first_seen}, last seen {last_seen}"
)


class AbuseIPDBConfig(_Section):
    enabled: StrictBool = Field(False, description="Report new offenders to AbuseIPDB.")
    url: str = Field(API_URL, description="Base URL of the API (…/api/v2).")
    key_env: str | None = Field(
        None, min_length=1, description="Environment variable with the API key."
    )
    key_file: Path | None = Field(None, description="File holding the API key.")
    categories: dict[str, list[int]] = Field(
        {},
        description="Cause → category numbers, over the defaults IPS [15, 21], DoS [4], "
        "AV [20], APP [15].",
    )
    other_categories: list[int] = Field(
        [15], min_length=1, description="Categories of any other cause."
    )
    min_offenses: int = Field(1, ge=1, description="Report offenders with this many offenses.")
    daily_limit: int = Field(1000, ge=1, description="Most reports sent a day (UTC).")
    repeat_after: FiniteDuration = Field(
        86400, description="An address is reported again after this long (at least 15m)."
    )
    comment: str = Field(
        DEFAULT_COMMENT,
        max_length=MAX_COMMENT,
        description="Comment template: {cause}, {offenses}, {first_seen}, {last_seen}.",
    )
    exclude: list[Network] = Field(
        [], description="Networks never reported (besides never-block, protect, allowlist)."
    )
    timeout: FiniteDuration = Field(10, description="Time allowed for one report.")

    @field_validator("url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f'write the API URL like "{API_URL}"')
        if parts.username or parts.password or parts.query:
            raise ValueError("put no credentials or query in the URL; use key_env or key_file")
        return value.rstrip("/")

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for cause, numbers in value.items():
            _check_numbers(f"categories.{cause}", numbers)
        return value

    @field_validator("other_categories")
    @classmethod
    def _known_other(cls, value: list[int]) -> list[int]:
        _check_numbers("other_categories", value)
        return value

    @field_validator("comment")
    @classmethod
    def _safe_fields(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}; write {{cause}} and so on") from None
        unknown = sorted(fields - COMMENT_FIELDS)
        if unknown:
            allowed = ", ".join(f"{{{f}}}" for f in sorted(COMMENT_FIELDS))
            raise ValueError(f"unknown field {{{unknown[0]}}}; the comment may use {allowed}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AbuseIPDBConfig:
        if self.key_env is not None and self.key_file is not None:
            raise ValueError("set one of key_env, key_file")
        if self.enabled and self.key_env is None and self.key_file is None:
            raise ValueError("enabled: set key_env (or key_file) to the AbuseIPDB API key")
        if self.repeat_after < MIN_REPEAT:
            raise ValueError(
                "repeat_after: at least 15m — AbuseIPDB takes one report of an address each 15m"
            )
        return self

    def categories_of(self, cause: str) -> tuple[str, tuple[int, ...]]:
        """The cause as the comment names it (a configured cause, else "other") and its
        categories. Causes compare case-insensitively; the device's text is never echoed."""
        wanted = cause.casefold()
        for table in (self.categories, DEFAULT_CATEGORIES):
            for name, numbers in table.items():
                if name.casefold() == wanted:
                    return name, tuple(sorted(set(numbers)))
        return "other", tuple(sorted(set(self.other_categories)))

    def resolve_key(self, base_dir: Path) -> SecretStr:
        """The API key; a ConfigError names the fix."""
        return read_secret(
            "abuseipdb.key", None, self.key_env, self.key_file, base_dir, what="AbuseIPDB API key"
        )

    def warnings(self, base_dir: Path) -> list[str]:
        """What ``banfeed check`` says of the reporter; raises a ConfigError when it is enabled
        and its key cannot be read (nothing would be reported)."""
        if not self.enabled:
            return []
        self.resolve_key(base_dir)
        found = []
        if self.url.startswith("http://"):
            found.append("abuseipdb.url: plain http sends the API key in clear — use https")
        if self.key_file is not None:
            path = beside(self.key_file, base_dir)
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                found.append(f"abuseipdb.key_file: {path} is readable by others — chmod 600")
        return found


def _check_numbers(where: str, numbers: list[int]) -> None:
    if not numbers:
        raise ValueError(f"{where}: give at least one category number")
    bad = [n for n in numbers if n not in CATEGORIES]
    if bad:
        raise ValueError(f"{where}: {bad[0]} is not an AbuseIPDB category (1 to 23)")
