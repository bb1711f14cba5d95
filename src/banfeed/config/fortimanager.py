"""``[[fortimanagers]]``: a FortiManager that banfeed polls its managed FortiGates through.

One JSON-RPC ``exec`` of ``sys/proxy/json`` per ADOM and VDOM reaches every device of the
``targets``; each device's answer is then judged as if it had been polled directly (see
``fortios/fortimanager.py``). The section is its own model; the root ``Config`` holds the list as
:data:`FortiManagers`, whose validator also checks names against ``[[fortigates]]``.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .fields import NAME_PATTERN, FiniteDuration, Size, _is_name, _Section, beside, read_secret
from .sections import FortiGateConfig

# The separator between a FortiManager's name and its managed device's name: "fmg-1.edge-7".
SEPARATOR = "."


class FortiManagerConfig(_Section):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Unique short name; its devices are named NAME.DEVICE.",
    )
    url: str = Field(description="Base URL of the FortiManager: https://host[:port].")
    token_env: str | None = Field(
        None, min_length=1, description="Environment variable holding the API user's key."
    )
    token_file: Path | None = Field(None, description="File holding the API user's key.")
    adoms: list[str] = Field(["root"], min_length=1, description="ADOMs whose devices to poll.")
    targets: list[str] = Field(
        ["group/All_FortiGate"],
        min_length=1,
        description='Devices in each ADOM: "group/NAME" or a device name.',
    )
    vdoms: list[str] = Field(["root"], min_length=1, description='VDOMs to poll; ["*"] = all.')
    verify_tls: StrictBool = Field(True, description="Verify the FortiManager's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for a private certificate.")
    timeout: FiniteDuration = Field(60, description="Time allowed for one JSON-RPC call.")
    device_timeout: FiniteDuration = Field(
        30, description="Time the FortiManager waits for each device (its proxy timeout)."
    )
    max_response: Size = Field(256 * 1024**2, description="Largest JSON-RPC answer accepted.")
    push_quarantine: StrictBool | None = Field(
        None, description="Push quarantines to its devices (default: [push] quarantine)."
    )
    unban_everywhere: StrictBool = Field(
        True, description="Release addresses on its devices for `unban --everywhere`."
    )

    @field_validator("url", mode="before")
    @classmethod
    def _https_by_default(cls, value: Any) -> Any:
        if isinstance(value, str) and "://" not in value:
            return "https://" + value.strip()
        return value

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return FortiGateConfig._base_url(value)  # the same rule as a FortiGate's URL

    @field_validator("adoms")
    @classmethod
    def _adom_names(cls, value: list[str]) -> list[str]:
        for adom in value:
            if not _is_name(adom):
                raise ValueError(f"{adom!r} is not an ADOM name (letters, digits, _ . -)")
        if len(set(value)) != len(value):
            raise ValueError("an ADOM is listed twice")
        return value

    @field_validator("targets")
    @classmethod
    def _target_paths(cls, value: list[str]) -> list[str]:
        paths = []
        for target in value:
            kind, _, name = target.rpartition("/")
            if kind not in ("", "group", "device") or not _is_name(name):
                raise ValueError(
                    f'{target!r}: write "group/NAME" (a device group, like '
                    '"group/All_FortiGate") or a device name'
                )
            paths.append(f"{kind or 'device'}/{name}")
        if len(set(paths)) != len(paths):
            raise ValueError("a target is listed twice")
        return paths

    @field_validator("vdoms")
    @classmethod
    def _vdom_names(cls, value: list[str]) -> list[str]:
        return FortiGateConfig._vdom_names(value)  # the same rule as a FortiGate's VDOMs

    @model_validator(mode="after")
    def _key_and_timeouts(self) -> FortiManagerConfig:
        given = [k for k in ("token_env", "token_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of token_env (recommended) or token_file: the API user's key"
                + (f"; found {', '.join(given)}" if given else "")
            )
        if self.device_timeout >= self.timeout:
            raise ValueError(
                "device_timeout must be shorter than timeout, so the FortiManager answers "
                "for a slow device before banfeed gives up on the whole call"
            )
        return self

    def resolve_token(self, base_dir: Path) -> SecretStr:
        """The API key, from wherever the config says; a ConfigError names the fix."""
        return read_secret(
            f"fortimanagers[{self.name}].token",
            None,
            self.token_env,
            self.token_file,
            base_dir,
            what="key of the FortiManager API user",
        )


def _unique_names(
    value: list[FortiManagerConfig], info: ValidationInfo
) -> list[FortiManagerConfig]:
    """Names unique among FortiManagers and FortiGates, and no FortiGate named like a device
    behind a FortiManager (``fmg-1.x``): both would share status rows and offenses."""
    names = [fmg.name for fmg in value]
    fortigates = [fg.name for fg in info.data.get("fortigates", [])]
    dupes = sorted({n for n in names if names.count(n) > 1 or n in fortigates})
    if dupes:
        raise ValueError(
            "names must be unique across fortigates and fortimanagers; repeated: "
            + ", ".join(dupes)
        )
    shadowed = sorted(fg for fg in fortigates for n in names if fg.startswith(n + SEPARATOR))
    if shadowed:
        raise ValueError(
            f"fortigates named like a device behind a FortiManager ({', '.join(shadowed)}): "
            f'"NAME{SEPARATOR}DEVICE" names the devices a FortiManager polls — rename them'
        )
    return value


FortiManagers = Annotated[list[FortiManagerConfig], AfterValidator(_unique_names)]


def warnings(fortimanagers: Sequence[FortiManagerConfig], base_dir: Path) -> list[str]:
    """What ``banfeed check`` warns about a FortiManager: its key in clear, unverified TLS, a
    key file others can read. Whether it answers, accepts the key and resolves its targets is
    the poll ``check`` makes of it."""
    found = []
    for fmg in fortimanagers:
        where = f"fortimanagers[{fmg.name}]"
        if fmg.url.startswith("http://"):
            found.append(f"{where}.url: plain http sends the API key in clear — use https")
        if not fmg.verify_tls:
            found.append(
                f"{where}.verify_tls: false — its certificate is not checked, so anyone on the "
                "path can read its API key; set ca_file to its CA instead"
            )
        if fmg.token_file is not None:
            path = beside(fmg.token_file, base_dir)
            try:
                if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    found.append(f"{where}.token_file: {path} is readable by others — chmod 600")
            except OSError:
                pass  # resolve_token reports an unreadable file with its reason
    return found
