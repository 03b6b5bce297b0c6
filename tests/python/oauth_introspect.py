"""Asks certd whether an access token is active, as a Python service that
cannot verify JWTs itself would: authlib's OAuth2Session introspects it
(RFC 7662) at the endpoint the RFC 8414 metadata names, authenticated by
the service's certd certificate (no secret).

Usage: oauth_introspect.py ISSUER CA_BUNDLE CERT KEY CLIENT_ID TOKEN
Prints `ok <answer as JSON>`, or `FAILED <step>: <why>` and exits 1.
"""

import json
import sys

from authlib.integrations.requests_client import OAuth2Session

from outside import fail, metadata


def main():
    issuer, ca_bundle, cert, key, client_id, token = sys.argv[1:7]
    server = metadata(issuer, "oauth-authorization-server")
    endpoint = server.get("mtls_endpoint_aliases", {}).get("introspection_endpoint")
    if not endpoint:
        fail("discovery", f"no introspection endpoint in {server}")
    session = OAuth2Session(client_id=client_id, token_endpoint_auth_method="none")
    session.cert = (cert, key)
    session.verify = ca_bundle
    try:
        response = session.introspect_token(endpoint, token=token, token_type_hint="access_token")
    except Exception as error:  # noqa: BLE001
        fail("introspect", repr(error))
    if response.status_code != 200:
        fail("introspect", f"HTTP {response.status_code}: {response.text}")
    print("ok " + json.dumps(response.json()))


if __name__ == "__main__":
    main()
