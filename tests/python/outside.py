"""What the outside-client scripts share: how they report, and how they
find certd's metadata from the issuer (as a library pointed at the issuer
does). Only the standard library."""

import json
import sys
import urllib.request


def fail(step, why):
    """Reports `FAILED <step>: <why>` and exits 1."""
    print(f"FAILED {step}: {why}")
    sys.exit(1)


def metadata(issuer, document):
    """The JSON document at `{issuer}/.well-known/{document}`."""
    url = f"{issuer}/.well-known/{document}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.load(answer)
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        fail("discovery", f"{url}: {error}")
