"""Prometheus metric definitions (one registry per process, exposed by the server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CYCLE_SECONDS = Histogram(
    "banfeed_cycle_duration_seconds",
    "Duration of one collection cycle (poll every device, write the store).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DEVICE_POLL_SECONDS = Histogram(
    "banfeed_device_poll_duration_seconds",
    "Duration of one poll of one device and VDOM selector.",
    ["device"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEVICE_ERRORS = Counter(
    "banfeed_device_errors_total", "Failed polls, by device and kind.", ["device", "kind"]
)
ENTRIES_REJECTED = Counter(
    "banfeed_entries_rejected_total", "Invalid entries sent by devices, dropped.", ["device"]
)
OFFENSES_NEW = Counter("banfeed_offenses_new_total", "New offenses stored.")
SUPPRESSED = Counter(
    "banfeed_suppressed_total", "New offenses by never-block or allowlisted addresses."
)
LAST_SUCCESS = Gauge(
    "banfeed_last_cycle_success_timestamp_seconds", "When the last cycle finished writing."
)

STORE_UP = Gauge("banfeed_store_up", "1 when the last feed refresh could read the store.")
FEED_ENTRIES = Gauge("banfeed_feed_entries", "Lines in each feed.", ["feed"])
FEED_OVERFLOW = Gauge(
    "banfeed_feed_overflow", "Matching offenders left out of a feed by max_entries.", ["feed"]
)
FEED_REQUESTS = Counter(
    "banfeed_feed_requests_total", "Feed requests by feed and HTTP status.", ["feed", "status"]
)
FEED_HELD = Gauge(
    "banfeed_feed_held",
    "1 while the mass-drop guard serves a feed's last good version (alert on it).",
    ["feed"],
)
FEED_REFUSALS = Counter(
    "banfeed_feed_refusals_total",
    "Feed requests refused, by feed and reason (address: allow_from; credentials).",
    ["feed", "reason"],
)
FEED_CONSUMERS_UNRECORDED = Counter(
    "banfeed_feed_consumers_unrecorded_total",
    "Fetches by a new consumer not recorded: the feed already has the most consumers kept.",
)
HTTP_CONNECTIONS_CLOSED = Counter(
    "banfeed_http_connections_closed_total",
    "Connections the server closed early, by reason (header_size, header_timeout, silent, "
    "send_timeout, evicted, busy).",
    ["reason"],
)
HTTP_CONNECTIONS = Gauge("banfeed_http_connections", "Client connections open now.")

ALERTS = Counter(
    "banfeed_alerts_total",
    "Alert deliveries by kind, target and outcome (sent, retried, failed, rate_limited).",
    ["kind", "target", "outcome"],
)
ALERTS_DROPPED = Counter(
    "banfeed_alerts_dropped_total", "Alert deliveries dropped, oldest first, from a full queue."
)
ALERT_ACTIVE = Gauge("banfeed_alert_active", "Alerts firing now, by kind.", ["kind"])

ABUSEIPDB_REPORTS = Counter(
    "banfeed_abuseipdb_reports_total",
    "AbuseIPDB reports by outcome (reported, rejected, rate_limited, failed, skipped, "
    "daily_limit, dropped).",
    ["outcome"],
)
