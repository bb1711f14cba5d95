"""The kit as FortiManager JSON-RPC requests: ADOM objects, policy package entries, device
settings. A FortiManager-managed FortiGate is overwritten by the next install, so CLI pasted on
the device itself does not last; these requests put the same objects where FortiManager keeps
them."""

from __future__ import annotations

import json
from typing import Any

from .tree import Block, Command, Comment, Edit, Move, Node, Plan, Set, placeholder

# where each FortiOS table lives on a FortiManager
ADOM_OBJECTS = {
    "system external-resource",
    "ips sensor",
    "application list",
    "antivirus profile",
    "vpn certificate ca",
}
PACKAGE_TABLES = {
    "firewall policy",
    "firewall local-in-policy",
    "firewall local-in-policy6",
    "firewall DoS-policy",
    "firewall DoS-policy6",
}
DEVICE_TABLES = {"system accprofile", "system api-user"}
LIST_KEYS = {
    "srcintf",
    "dstintf",
    "srcaddr",
    "dstaddr",
    "srcaddr6",
    "dstaddr6",
    "service",
    "schedule",
    "intf",
    "interface",
    "vdom",
    "severity",
    "category",
}


class _Requests:
    def __init__(self, adom: str, package: str) -> None:
        self.adom = adom
        self.package = package
        self.requests: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add(self, method: str, url: str, **params: Any) -> None:
        request = {
            "id": len(self.requests) + 1,
            "method": method,
            "params": [{"url": url, **params}],
        }
        self.requests.append(request)

    def nodes(self, nodes: tuple[Node, ...] | list[Node], devices: tuple[str, ...]) -> None:
        previous: Node | None = None
        for node in nodes:
            if isinstance(node, Comment) and isinstance(previous, Comment):
                self.notes[-1] += " " + node.text  # consecutive comments are one note
            elif isinstance(node, Comment):
                self.notes.append(node.text)
            elif isinstance(node, Command):
                self.notes.append(f"on each device (FortiManager cannot do it): {node.text}")
            elif isinstance(node, Block) and node.path == "global":
                self.nodes(node.body, devices)
            elif isinstance(node, Block):
                self.table(node, devices)
            previous = node

    def table(self, node: Block, devices: tuple[str, ...]) -> None:
        table = node.path.replace(" ", "/")
        if node.path in DEVICE_TABLES:
            for device in devices or ("<device>",):
                url = f"/pm/config/device/{device}/global/{table}"
                self.add("set", url, data=[_entry(e, "id") for e in _edits(node)])
            return
        if node.path in ADOM_OBJECTS:
            url = f"/pm/config/adom/{self.adom}/obj/{table}"
            self.notes.extend(c.text for c in node.body if isinstance(c, Comment))
            self.add("set", url, data=[_entry(e, "id") for e in _edits(node)])
            return
        if node.path not in PACKAGE_TABLES:  # no ADOM place: a device-level step
            self.notes.append(f"on each device: config {node.path} (as in the CLI form)")
            return
        url = f"/pm/config/adom/{self.adom}/pkg/{self.package}/{table}"
        for child in node.body:
            if isinstance(child, Move):
                self.add("move", f"{url}/{child.policy}", option="before", target=str(child.before))
            elif isinstance(child, Edit) and child.name == 0:  # FortiManager picks the ID
                self.add("add", url, data=_entry(child, "policyid", with_key=False))
            elif isinstance(child, Edit):
                self.add("update", f"{url}/{child.name}", data=_entry(child, "policyid"))


def _edits(node: Block) -> list[Edit]:
    return [child for child in node.body if isinstance(child, Edit)]


def _value(node: Set) -> Any:
    values: list[Any] = [int(v) if v.isdigit() and not node.quoted else v for v in node.values]
    if node.key in LIST_KEYS or len(values) > 1:
        return values
    return values[0]


def _entry(node: Edit, id_key: str, *, with_key: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if with_key and not placeholder(node.name):
        data[id_key if isinstance(node.name, int) else "name"] = node.name
    for child in node.body:
        if isinstance(child, Set):
            data[child.key] = _value(child)
        elif isinstance(child, Block):
            data[child.path] = _table_value(child)
    return data


def _table_value(node: Block) -> Any:
    edits = _edits(node)
    if edits:
        return [_entry(e, "id") for e in edits]
    return {c.key: _value(c) for c in node.body if isinstance(c, Set)}


def fortimanager_json(plan: Plan, *, adom: str, package: str) -> str:
    """The plan as JSON-RPC requests for FortiManager's ``/jsonrpc`` (in a logged-in session).

    Device settings (the API admin) go to each polled device's database, by banfeed's device
    name; objects to the ADOM; policies to the policy package."""
    requests = _Requests(adom, package)
    for section in plan.sections:
        requests.notes.append(f"--- {section.title}")
        requests.nodes(section.nodes, section.devices)
    requests.notes.append(
        f"then install policy package {package} on the FortiGates that pull the feeds "
        "(Policy & Objects > Install Wizard, or exec /securityconsole/install/package)"
    )
    document = {
        "adom": adom,
        "package": package,
        "requests": requests.requests,
        "notes": requests.notes,
    }
    return json.dumps(document, indent=2) + "\n"
