"""The consuming role: the threat feeds a FortiGate pulls, and the policies that deny them."""

from __future__ import annotations

from ..config.limits import DEFAULT_MAX_ENTRIES, PRESETS, preset_for
from .kit import FeedTarget, Kit
from .tree import (
    NAME_LIMIT,
    Comment,
    Move,
    Node,
    Plan,
    Section,
    block,
    edit,
    keyword,
    names,
    short_name,
)

DENY_POLICY = "banfeed-deny"
IDENTITY_CHECK_FROM = {"7.0": "7.0.8", "7.2": "7.2.4"}


def resource_name(feed: str, shard: int | None = None) -> str:
    """``banfeed-NAME``, or ``banfeed-NAME-k`` for shard k, cut to FortiOS's 35 characters
    (a shard's number is kept: the cut falls before it)."""
    if shard is None:
        return short_name(f"banfeed-{feed}")
    suffix = f"-{shard}"
    return short_name(f"banfeed-{feed}")[: NAME_LIMIT - len(suffix)] + suffix


def resource_names(feeds: tuple[FeedTarget, ...] | list[FeedTarget]) -> dict[str, str]:
    """``resource_name`` per feed (or shard: by ``served_as``), kept unique."""
    found: dict[str, str] = {}
    for number, feed in enumerate(feeds, 1):
        name = resource_name(feed.name, feed.shard)
        if name in found.values():
            suffix = f"-{number}"
            name = name[: NAME_LIMIT - len(suffix)] + suffix
        found[feed.served_as] = name
    return found


def consume_plan(kit: Kit, plan: Plan) -> None:
    feeds = [feed for feed in kit.feeds if feed.auth != "bearer"]
    for feed in kit.feeds:
        if feed.auth == "bearer":
            plan.warnings.append(
                f"feed {feed.name}: bearer auth, which a FortiGate cannot send (it pulls with "
                'basic auth only): left out; give FortiGates a feed with type = "basic"'
            )
    if not feeds:
        return
    for feed in feeds:
        _shard_limits(feed, plan)
    feeds = [part for feed in feeds for part in feed.parts()]  # a shard is a resource of its own
    resources = resource_names(feeds)
    if any(feed.https for feed in feeds):
        plan.sections.append(_ca(kit))
    plan.sections.append(_resources(kit, feeds, resources, plan))
    plan.sections.append(_deny(kit, feeds, resources))
    plan.sections.append(_local_in(kit, feeds, resources))


def _ca(kit: Kit) -> Section:
    section = Section("consume: trust banfeed's HTTPS certificate")
    nodes = section.nodes
    since = IDENTITY_CHECK_FROM.get(kit.release)
    nodes.append(Comment("the feeds use server-identity-check full: the certificate chain and"))
    nodes.append(Comment("the URL's host name (subjectAltName) are checked on every fetch"))
    if since:
        nodes.append(Comment(f"(server-identity-check exists from FortiOS {since} on)"))
    if kit.ca_pem:
        nodes.append(block("vpn certificate ca", edit("banfeed-ca", names("ca", kit.ca_pem))))
    else:
        nodes.append(Comment("a public CA needs nothing here; a private or self-signed one is"))
        nodes.append(Comment("imported: System > Certificates > Create/Import > CA Certificate,"))
        nodes.append(Comment("or execute vpn certificate ca import tftp <file> <tftp-server>;"))
        nodes.append(Comment("--ca-file FILE prints it as CLI (config vpn certificate ca)"))
    return section


def _resources(kit: Kit, feeds: list[FeedTarget], resources: dict[str, str], plan: Plan) -> Section:
    section = Section("consume: the threat feeds (Security Fabric > External Connectors)")
    nodes = section.nodes
    nodes.append(Comment("multi-VDOM mode: paste this and what follows in the VDOM that uses"))
    nodes.append(Comment("the feeds (config vdom / edit NAME)"))
    nodes.extend(_limits(kit, feeds, plan))
    entries: list[Node] = []
    for feed in feeds:
        what = f"shard {feed.shard} of " if feed.shard is not None else ""
        body: list[Node] = [
            names(
                "comments", f"banfeed {what}feed {feed.name}, at most {feed.max_entries} entries"
            ),
            keyword("type", "address"),
            names("resource", feed.url),
            keyword("refresh-rate", kit.refresh),
        ]
        if feed.username:
            body.append(names("username", feed.username))
            body.append(keyword("password", "<the feed password>"))
            if not feed.https:
                plan.warnings.append(
                    f"feed {feed.name}: basic auth over http sends the password in clear; "
                    "serve HTTPS ([server] cert_file) or keep it on a trusted network"
                )
        if feed.https:
            body.append(keyword("server-identity-check", "full"))
        if feed.allow_from and feed.shard in (None, 1):
            allowed = ", ".join(str(net) for net in feed.allow_from)
            entries.append(Comment(f"{feed.name} answers only to {allowed}: fetch from there"))
        if feed.shard == 1:
            entries.append(Comment(f"{feed.name}: one resource a shard, worst offenders first"))
        entries.append(edit(resources[feed.served_as], *body))
    nodes.append(block("system external-resource", *entries))
    if any(feed.username for feed in feeds):
        nodes.append(Comment("banfeed never prints a password: type it at <the feed password>"))
    return section


def _limits(kit: Kit, feeds: list[FeedTarget], plan: Plan) -> list[Node]:
    """What this release loads, compared with what the feeds may publish."""
    total = sum(feed.max_entries for feed in feeds)
    notes: list[Node] = []
    if kit.release in ("7.0", "7.2"):
        limit = PRESETS["fortios-7.2"].entries
        notes.append(Comment(f"FortiOS {kit.release} loads at most {limit} entries (10 MB) a feed"))
        for feed in feeds:
            if feed.max_entries > limit and feed.shard in (None, 1):
                plan.warnings.append(
                    f"feed {feed.name}: limit {feed.max_entries} is over the {limit} a "
                    f'FortiOS {kit.release} feed loads; set limit = "fortios-{kit.release}"'
                    + (" (each shard holds limit entries)" if feed.shard else "")
                )
        return notes
    shared = PRESETS["fortios-7.4" if kit.release == "7.4" else "fortios-7.6-entry"].entries
    notes.append(Comment(f"these feeds may publish {total} entries together; from 7.4.4 a device"))
    if kit.release == "7.4":
        notes.append(
            Comment(f"loads {shared} across all its IP feeds (7.4.0-7.4.3: 131072 a feed)")
        )
    else:
        notes.append(Comment("loads 300000 (90G and below), 1000000 (100F-900G) or 5000000"))
        notes.append(Comment("(1000F and up) across all its IP feeds"))
    if total > shared and kit.release == "7.4":
        plan.warnings.append(
            f"the feeds add up to {total} entries, over the {shared} a FortiOS 7.4.4+ device "
            "loads across all its IP feeds: the newest are dropped; lower limit (or shards)"
        )
    elif total > PRESETS["fortios-7.6-entry"].entries:
        plan.warnings.append(
            f"the feeds add up to {total} entries: on FortiOS 7.6 that fits mid-range "
            "(1000000) or high-end models only; entry-level models load 300000"
        )
    if all(feed.max_entries == DEFAULT_MAX_ENTRIES for feed in feeds) and len(feeds) == 1:
        notes.append(Comment('more room: limit = "fortios-7.4" or a preset of your model'))
    return notes


def _shard_limits(feed: FeedTarget, plan: Plan) -> None:
    """A shared preset (all IP feeds of a device together) split into shards still fills one
    device: sharding is for per-feed limits (FortiOS before 7.4.4, a VM02)."""
    preset = preset_for(feed.max_entries)
    if feed.shards > 1 and preset is not None and preset.shared:
        plan.warnings.append(
            f"feed {feed.name}: {feed.shards} shards of limit {feed.max_entries} "
            f"({preset.name}) publish up to {feed.shards * feed.max_entries} entries, but "
            f"{preset.consumer} load {preset.entries} across all IP feeds together: give a "
            'per-feed limit ("fortios-7.2", "fortios-vm02") to shard, or shards = 1'
        )


def _interfaces(kit: Kit) -> tuple[str, ...]:
    return kit.interfaces or ("any",)


def _deny(kit: Kit, feeds: list[FeedTarget], resources: dict[str, str]) -> Section:
    section = Section("consume: deny what the feeds list, above every accept policy")
    v4 = [resources[f.served_as] for f in feeds if f.ipv4]
    v6 = [resources[f.served_as] for f in feeds if f.ipv6]
    body: list[Node] = [
        names("name", DENY_POLICY),
        names("srcintf", *_interfaces(kit)),
        names("dstintf", "any"),
    ]
    if v4:
        body += [names("srcaddr", *v4), names("dstaddr", "all")]
    if v6:
        body += [names("srcaddr6", *v6), names("dstaddr6", "all")]
    body += [
        keyword("action", "deny"),
        names("schedule", "always"),
        names("service", "ALL"),
        keyword("logtraffic", "all"),
        names("comments", "banfeed: offenders of every FortiGate"),
    ]
    policy_id = kit.policy_id if kit.policy_id is not None else 0
    nodes = section.nodes
    if policy_id == 0:
        nodes.append(Comment("edit 0 takes the next free ID, at the bottom of the list"))
    nodes.append(block("firewall policy", edit(policy_id, *body)))
    nodes.append(Comment("policies match top-down: move the deny above your accept policies"))
    moved: str | int = kit.policy_id if kit.policy_id is not None else f"<ID of {DENY_POLICY}>"
    target: str | int = kit.before if kit.before is not None else "<ID of your first policy>"
    if kit.policy_id is None or kit.before is None:
        nodes.append(Comment("IDs: show firewall policy (or --policy-id and --before)"))
    nodes.append(block("firewall policy", Move(moved, target)))
    return section


def _local_in(kit: Kit, feeds: list[FeedTarget], resources: dict[str, str]) -> Section:
    section = Section("consume (variant): also deny them the FortiGate itself (local-in)")
    nodes = section.nodes
    nodes.append(Comment("admin access, SSL VPN, IPsec: traffic to the FortiGate skips the"))
    nodes.append(Comment("firewall policies above; local-in policies cover it"))
    interfaces = _interfaces(kit)
    groups = [interfaces] if kit.release == "7.6" else [(i,) for i in interfaces]
    for path, family in (("firewall local-in-policy", "ipv4"), ("firewall local-in-policy6", "")):
        sources = [resources[f.served_as] for f in feeds if (f.ipv4 if family else f.ipv6)]
        if not sources:
            continue
        policies = [
            edit(
                0,
                names("intf", *group),
                names("srcaddr", *sources),
                names("dstaddr", "all"),
                keyword("action", "deny"),
                names("service", "ALL"),
                names("schedule", "always"),
                names("comments", "banfeed: offenders of every FortiGate"),
            )
            for group in groups
        ]
        nodes.append(block(path, *policies))
    return section
