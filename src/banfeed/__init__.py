"""banfeed: FortiGate quarantine → durable store → safe threat feeds."""

__version__ = "0.1.0"
