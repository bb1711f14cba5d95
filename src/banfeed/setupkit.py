"""What a FortiGate needs to use banfeed's feeds: the FortiOS CLI to paste."""

from __future__ import annotations


def fortigate_config(feed: str, base_url: str, username: str | None, refresh_minutes: int) -> str:
    """The FortiOS CLI that makes a FortiGate pull ``feed`` and deny its sources."""
    url = base_url if base_url.endswith(".txt") else f"{base_url.rstrip('/')}/feeds/{feed}.txt"
    name = f"banfeed-{feed}"[:35]  # FortiOS limits these names to 35 characters
    policy = f"deny-{name}"[:35]
    lines = [
        "config system external-resource",
        f'    edit "{name}"',
        "        set type address",
        f'        set resource "{url}"',
        f"        set refresh-rate {refresh_minutes}",
    ]
    if username:
        lines += [f'        set username "{username}"', "        set password <the feed password>"]
    if url.startswith("https://"):
        lines.append("        set server-identity-check full")
    lines += [
        "    next",
        "end",
        "config firewall policy",
        "    edit 0",
        f'        set name "{policy}"',
        '        set srcintf "any"',
        '        set dstintf "any"',
        f'        set srcaddr "{name}"',
        '        set dstaddr "all"',
        "        set action deny",
        '        set schedule "always"',
        '        set service "ALL"',
        "        set logtraffic all",
        "    next",
        "end",
    ]
    return "\n".join(lines)
