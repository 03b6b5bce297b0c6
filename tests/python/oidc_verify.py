"""Verifies a certd token as a Python service with PyJWT does: discovery
from the issuer, the key from the discovered jwks_uri (PyJWKClient), then
the signature, iss, aud and exp. A token presented for another issuer or
audience must be refused.

Usage: oidc_verify.py ISSUER TOKEN AUDIENCE
Prints `ok <claims as JSON>`, or `FAILED <step>: <why>` and exits 1.
"""

import json
import sys

import jwt

from outside import fail, metadata


def main():
    issuer, token, audience = sys.argv[1:4]
    config = metadata(issuer, "openid-configuration")
    if config.get("issuer") != issuer:
        fail("discovery", f"issuer {config.get('issuer')!r}, not {issuer!r}")
    algorithms = config.get("id_token_signing_alg_values_supported") or []
    try:
        key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
    except Exception as error:  # noqa: BLE001
        fail("jwks", f"{config.get('jwks_uri')}: {error}")
    required = {"require": ["iss", "sub", "aud", "exp", "iat"]}
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            options=required,
        )
    except Exception as error:  # noqa: BLE001
        fail("verify", repr(error))
    for wrong, expected in [
        ({"issuer": "https://elsewhere.example"}, jwt.InvalidIssuerError),
        ({"audience": "not-" + audience}, jwt.InvalidAudienceError),
    ]:
        arguments = {"audience": audience, "issuer": issuer, **wrong}
        try:
            jwt.decode(token, key.key, algorithms=algorithms, options=required, **arguments)
        except expected:
            continue
        except Exception as error:  # noqa: BLE001
            fail("refusal", f"{wrong}: {error!r}, not {expected.__name__}")
        fail("refusal", f"{wrong}: accepted")
    print("ok " + json.dumps(claims, sort_keys=True))


main()
