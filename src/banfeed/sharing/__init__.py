"""Sharing what banfeed publishes with outside services (``abuseipdb``: AbuseIPDB reports)."""
