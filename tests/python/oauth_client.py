"""Gets an access token from certd's token endpoint as a Python service
would: authlib's OAuth2Session runs the client-credentials flow, the
client authenticated by its certd certificate over mTLS (no secret), the
token endpoint found through discovery. PyJWT then verifies the token from
the discovered jwks_uri: iss, aud, exp, the scope, and cnf.x5t#S256 equal
to the SHA-256 thumbprint of the client certificate (RFC 8705).

Usage: oauth_client.py ISSUER CA_BUNDLE CERT KEY CLIENT_ID AUDIENCE SCOPE
Prints `ok <claims as JSON>`, or `FAILED <step>: <why>` and exits 1.
"""

import json
import sys

import jwt
from authlib.integrations.requests_client import OAuth2Session

from outside import certificate_identity, fail, metadata, verified_claims


def main():
    issuer, ca_bundle, cert, key, client_id, audience, scope = sys.argv[1:8]
    server = metadata(issuer, "oauth-authorization-server")
    if "client_credentials" not in server.get("grant_types_supported", []):
        fail("discovery", f"no client_credentials in {server}")
    if "tls_client_auth" not in server.get("token_endpoint_auth_methods_supported", []):
        fail("discovery", f"no tls_client_auth in {server}")
    token_endpoint = server["mtls_endpoint_aliases"]["token_endpoint"]

    # tls_client_auth: the client has an id (its SPIFFE ID) and no secret.
    spiffe_id, thumbprint = certificate_identity(cert)
    if spiffe_id != client_id:
        fail("certificate", f"names {spiffe_id}, not the client {client_id}")
    session = OAuth2Session(
        client_id=spiffe_id,
        token_endpoint_auth_method="none",
        scope=scope,
    )
    session.cert = (cert, key)
    session.verify = ca_bundle
    try:
        token = session.fetch_token(
            token_endpoint, grant_type="client_credentials", audience=audience
        )
    except Exception as error:  # noqa: BLE001
        fail("token", repr(error))
    if token.get("token_type") != "Bearer" or token.get("scope") != scope:
        fail("token", f"unexpected answer {token}")

    keys = jwt.PyJWKClient(server["jwks_uri"])
    access_token = token["access_token"]
    claims = verified_claims(
        "verify",
        access_token,
        keys,
        server,
        issuer,
        audience,
        ["iss", "sub", "aud", "exp", "iat", "jti"],
    )
    if claims.get("cnf", {}).get("x5t#S256") != thumbprint:
        fail("binding", f"cnf {claims.get('cnf')} is not the certificate's {thumbprint}")
    if claims.get("sub") != spiffe_id or set(claims.get("scope", "").split()) != set(scope.split()):
        fail("claims", f"{claims}")

    # A scope nobody granted is refused with RFC 6749's invalid_scope.
    refused = OAuth2Session(client_id=spiffe_id, token_endpoint_auth_method="none")
    refused.cert = (cert, key)
    refused.verify = ca_bundle
    try:
        refused.fetch_token(
            token_endpoint,
            grant_type="client_credentials",
            audience=audience,
            scope="payroll:read",
        )
        fail("refusal", "an ungranted scope was issued")
    except Exception as error:  # noqa: BLE001
        if getattr(error, "error", None) != "invalid_scope":
            fail("refusal", f"{error!r}, not invalid_scope")
    print("ok " + json.dumps(claims))


if __name__ == "__main__":
    main()
