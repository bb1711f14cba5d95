"""The container's HEALTHCHECK: GET $BANFEED_HEALTH_URL (http://127.0.0.1:8080/healthz by
default; https is accepted with any certificate, since it is banfeed's own on this host).
Exit 0 when it answers 200, 1 otherwise, with the reason on standard error."""

import os
import ssl
import sys
import urllib.error
import urllib.request

URL = os.environ.get("BANFEED_HEALTH_URL", "http://127.0.0.1:8080/healthz")


def main() -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(URL, timeout=4, context=context) as answer:
            status = answer.status
    except (urllib.error.URLError, OSError) as exc:
        print(f"banfeed health: {URL}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"banfeed health: {URL}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
