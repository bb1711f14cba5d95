"""What `banfeed check` warns about: things that work but that an operator should fix."""

from __future__ import annotations

import stat
from urllib.parse import urlsplit

from .config import Config
from .errors import InputError
from .net import NetworkSet, never_block_reason, parse_address


def warnings(config: Config) -> list[str]:
    """Things that work but that an operator should fix; shown by ``banfeed check``."""
    found = []
    protect = NetworkSet((n, True) for n in config.safety.protect)
    for fg in config.fortigates:
        where = f"fortigates[{fg.name}]"
        if fg.url.startswith("http://"):
            found.append(f"{where}.url: plain http sends the token in clear — use https")
        if fg.token is not None:
            found.append(f"{where}.token: a literal token in the config — prefer token_env")
        if not fg.verify_tls:
            found.append(f"{where}.verify_tls: false — set ca_file to the device's CA instead")
        host = urlsplit(fg.url).hostname or ""
        try:
            address = parse_address(host)
        except InputError:
            found.append(
                f"{where}.url: {host} is a name; banfeed resolves nothing, so it cannot check "
                "that this device's address is in [safety] protect"
            )
        else:
            if protect.match(address) is None and never_block_reason(address) is None:
                found.append(
                    f"{where}.url: {address} is not in [safety] protect — add your FortiGates' "
                    "and your own public ranges so they can never be published"
                )
        if fg.token_file is not None:
            path = fg.token_file if fg.token_file.is_absolute() else config.base_dir / fg.token_file
            try:
                if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    found.append(f"{where}.token_file: {path} is readable by others — chmod 600")
            except OSError:
                pass  # resolve_token reports an unreadable file with its reason
    return found
