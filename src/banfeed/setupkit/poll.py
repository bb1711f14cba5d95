"""The polling role: a least-privilege REST API admin for banfeed, and the security profiles
that make a FortiGate quarantine attackers in the first place."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from .kit import Kit, Poller, expiry_text
from .tree import (
    Block,
    Command,
    Comment,
    Node,
    Plan,
    Section,
    block,
    edit,
    keyword,
    names,
)

ANY_DEVICE = "(each device)"  # no [[fortigates]] configured: the read-only form for any
DOS_ANOMALIES = ("tcp_syn_flood", "tcp_port_scan", "udp_flood", "icmp_flood")


@dataclass(frozen=True)
class Access:
    """What one group of devices lets banfeed do."""

    write: bool  # authgrp read-write: push quarantines, unban --everywhere
    feed_write: bool  # secfabgrp read-write: a push-type threat feed
    every_vdom: bool  # vdoms = ["*"]: a global-scope profile
    vdoms: tuple[str, ...]

    @property
    def profile(self) -> str:
        return "banfeed-write" if self.write or self.feed_write else "banfeed-read"


def access(poller: Poller, unban_everywhere: bool) -> Access:
    """The permissions banfeed needs on ``poller``: read, unless it writes there."""
    every = "*" in poller.vdoms
    return Access(
        write=poller.receives_pushes or unban_everywhere,
        feed_write=poller.push_feed is not None,
        every_vdom=every,
        vdoms=("root",) if every else poller.vdoms,
    )


def poll_plan(kit: Kit, plan: Plan) -> None:
    groups: dict[Access, list[Poller]] = {}
    for poller in kit.pollers or (Poller(ANY_DEVICE),):
        groups.setdefault(access(poller, kit.unban_everywhere), []).append(poller)
    for grant, pollers in groups.items():
        plan.sections.append(_api_admin(kit, grant, pollers))
    if not kit.trusthosts:
        plan.warnings.append(
            "no --trusthost given: replace <banfeed-address> with the address banfeed polls from"
        )
    plan.sections.append(_quarantine(kit))


def _api_admin(kit: Kit, grant: Access, pollers: list[Poller]) -> Section:
    devices = ", ".join(p.name for p in pollers)
    what = "read-write" if grant.write else "read-only"
    section = Section(
        f"poll: a {what} REST API admin for banfeed (devices: {devices})",
        devices=tuple(p.name for p in pollers if p.name != ANY_DEVICE),
    )
    nodes = section.nodes
    nodes.append(
        Comment("authgrp covers the quarantine list (user/banned): read to poll it, read-write")
    )
    nodes.append(
        Comment("only to add or clear quarantines ([push] quarantine, unban --everywhere).")
    )
    if not grant.write:
        nodes.append(Comment("[push] quarantine is off here: read is all banfeed needs."))
    profile: list[Node] = [
        names("comments", "banfeed: quarantine list" + (", push" if grant.write else "")),
    ]
    if grant.every_vdom:
        profile.append(keyword("scope", "global"))
    profile.append(keyword("authgrp", "read-write" if grant.write else "read"))
    # secfabgrp holds the threat feeds: `banfeed verify` reads them; a push feed writes one
    profile.append(keyword("secfabgrp", "read-write" if grant.feed_write else "read"))
    trust = _trusthosts(kit)
    admin: list[Node] = [
        names("comments", "banfeed collector"),
        names("accprofile", grant.profile),
        names("vdom", *grant.vdoms),
        block("trusthost", *trust),
    ]
    objects = [
        block("system accprofile", edit(grant.profile, *profile)),
        block("system api-user", edit(kit.api_user, *admin)),
    ]
    if grant.every_vdom or grant.vdoms != ("root",):
        nodes.append(Comment("multi-VDOM mode: admins and profiles are global objects"))
        nodes.append(Block("global", tuple(objects)))
    else:
        nodes.extend(objects)
    nodes.append(Comment("create the token (shown once) and give it to banfeed:"))
    nodes.append(Command(f"execute api-user generate-key {kit.api_user}"))
    for poller in pollers:
        if poller.token_source:
            nodes.append(
                Comment(f"{poller.name}: banfeed reads its token from {poller.token_source}")
            )
    nodes.append(Comment("it answers only from the trusted hosts above; anything else gets 401"))
    return section


def _trusthosts(kit: Kit) -> list[Node]:
    if not kit.trusthosts:
        return [
            edit(
                1,
                keyword("type", "ipv4-trusthost"),
                keyword("ipv4-trusthost", "<banfeed-address>", "255.255.255.255"),
            )
        ]
    entries: list[Node] = []
    for number, net in enumerate(kit.trusthosts, 1):
        if isinstance(net, IPv4Network):
            host = keyword("ipv4-trusthost", str(net.network_address), str(net.netmask))
            entries.append(edit(number, keyword("type", "ipv4-trusthost"), host))
        else:
            host = keyword("ipv6-trusthost", str(net))
            entries.append(edit(number, keyword("type", "ipv6-trusthost"), host))
    return entries


def _quarantine(kit: Kit) -> Section:
    """IPS, DoS, application control and antivirus actions that quarantine the attacker."""
    expiry = expiry_text(kit.quarantine_expiry)
    section = Section(f"poll: quarantine attackers, so banfeed has something to collect ({expiry})")
    nodes = section.nodes
    nodes.append(Comment("the expiry outlasts a few collection intervals, so no ban is missed"))
    quarantine = (keyword("quarantine", "attacker"), keyword("quarantine-expiry", expiry))
    ips_entry = edit(
        1,
        keyword("severity", "high", "critical"),
        keyword("status", "enable"),
        keyword("action", "block"),
        keyword("log", "enable"),
        *quarantine,
    )
    nodes.append(block("ips sensor", edit("banfeed-quarantine", block("entries", ips_entry))))
    interface = kit.interfaces[0] if kit.interfaces else "wan1"
    if not kit.interfaces:
        nodes.append(Comment('DoS policies need the internet-facing interface: "wan1" here'))
        nodes.append(Comment("(pass --interface to name yours)"))
    nodes.append(Comment("default thresholds: watch the logs with action pass before blocking"))
    anomalies = [
        edit(
            name,
            keyword("status", "enable"),
            keyword("log", "enable"),
            keyword("action", "block"),
            *quarantine,
        )
        for name in DOS_ANOMALIES
    ]
    dos = (
        names("name", "banfeed-dos"),
        names("interface", interface),
        names("srcaddr", "all"),
        names("dstaddr", "all"),
        names("service", "ALL"),
        block("anomaly", *anomalies),
    )
    nodes.append(block("firewall DoS-policy", edit(0, *dos)))
    if kit.ipv6:
        nodes.append(block("firewall DoS-policy6", edit(0, *dos)))
    app_entry = edit(
        1,
        keyword("category", "2", "6"),
        keyword("action", "block"),
        *quarantine,
    )
    nodes.append(Comment("application control: P2P (2) and Proxy (6), as in block-high-risk"))
    nodes.append(block("application list", edit("banfeed-quarantine", block("entries", app_entry))))
    av = (
        block("http", keyword("av-scan", "block")),
        block(
            "nac-quar",
            keyword("infected", "quar-src-ip"),
            keyword("expiry", expiry),
            keyword("log", "enable"),
        ),
    )
    nodes.append(block("antivirus profile", edit("banfeed-quarantine", *av)))
    nodes.append(Comment("apply them on the accept policies that attackers reach:"))
    apply = (
        keyword("utm-status", "enable"),
        names("ips-sensor", "banfeed-quarantine"),
        names("application-list", "banfeed-quarantine"),
        names("av-profile", "banfeed-quarantine"),
    )
    nodes.append(block("firewall policy", edit("<ID of your inbound accept policy>", *apply)))
    listing = "quarantine list" if kit.release == "7.0" else "banned-ip list"
    nodes.append(Comment(f"what is quarantined now: diagnose user {listing}"))
    return section
