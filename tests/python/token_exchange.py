"""Delegates a user's token along a chain of services through certd's
OAuth 2.0 Token Exchange (RFC 8693), as Python services would, with
libraries nobody on the team wrote: "orders" trades the user's token from
an outside identity provider for a token for "payments" with authlib's
OAuth2Session; "payments" trades that one for a token for "ledger" with
plain requests. Both authenticate by their certd certificate over mTLS (no
secret) at the token endpoint found through RFC 8414 discovery. PyJWT then
verifies both tokens from the discovered jwks_uri (iss, aud, exp, iat, jti,
typ at+jwt) and checks that they speak for the user (sub, subject_issuer,
email, groups, exp no later than the user token's), carry the chain of
actors (act, current actor outermost), name the acting service (client_id),
are narrowed to the scope asked for and are bound to the actor's
certificate (cnf.x5t#S256, RFC 8705). A scope beyond what the delegation
allows must be refused with HTTP 400 invalid_scope.

Usage: token_exchange.py ISSUER CA_BUNDLE ORDERS_DIR PAYMENTS_DIR USER_TOKEN IDP_ISSUER
(ORDERS_DIR and PAYMENTS_DIR each hold cert.pem and key.pem.)
Prints `ok {"payments_token": ..., "ledger_token": ..., "orders": ...,
"payments": ..., "payments_claims": ..., "ledger_claims": ...}` (the two
issued tokens, the two SPIFFE IDs, the verified claims), or
`FAILED <step>: <why>` and exits 1.
"""

import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

from outside import certificate_identity, fail, metadata, verified_claims

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti"]


class Service:
    """A service's certd identity: its certificate and key files, its
    SPIFFE ID (the certificate's URI SAN) and the SHA-256 thumbprint of the
    certificate (what cnf.x5t#S256 must say, RFC 8705)."""

    def __init__(self, name, directory):
        self.name = name
        self.cert = os.path.join(directory, "cert.pem")
        self.key = os.path.join(directory, "key.pem")
        try:
            self.spiffe_id, self.thumbprint = certificate_identity(self.cert)
        except Exception as error:  # noqa: BLE001
            fail("certificate", f"{name}: {self.cert}: {error!r}")


def exchange_form(subject_token, subject_token_type, audience, scope):
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": subject_token_type,
        "audience": audience,
        "scope": scope,
    }


def same_scope(value, scope):
    """Whether `value` is a scope string naming exactly the scopes of
    `scope`, in any order (RFC 6749 section 3.3: order does not matter)."""
    return isinstance(value, str) and sorted(value.split()) == sorted(scope.split())


def check_answer(step, answer, scope):
    """An RFC 8693 section 2.2.1 answer issuing an access token for `scope`."""
    expected = {
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
    }
    for name, value in expected.items():
        if answer.get(name) != value:
            fail(step, f"{name} {answer.get(name)!r}, not {value!r}, in {answer}")
    if not same_scope(answer.get("scope"), scope):
        fail(step, f"scope {answer.get('scope')!r}, not {scope!r}, in {answer}")
    expires_in = answer.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        fail(step, f"expires_in {expires_in!r} in {answer}")
    if not isinstance(answer.get("access_token"), str):
        fail(step, f"no access_token in {answer}")


def actors(claims):
    """The act chain of `claims` as SPIFFE IDs, current actor first
    (RFC 8693 section 4.1: each act object names its actor in `sub` and the
    actor before it in a nested `act`; other members are not looked at)."""
    chain = []
    act = claims.get("act")
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
            fail("act", f"{act!r} is not an actor in {claims.get('act')!r}")
        chain.append(act["sub"])
        act = act.get("act")
    return chain


def verify(step, token, server, keys, issuer, audience, scope, actor, chain, user, idp_issuer):
    """PyJWT's verdict on `token`, issued for `audience` with `scope` to
    `actor` (a Service), acting for `user` through `chain`: its claims."""
    try:
        header = jwt.get_unverified_header(token)
    except Exception as error:  # noqa: BLE001
        fail(step, f"not a JWT: {error!r}")
    if header.get("typ") != "at+jwt":
        fail(step, f"header typ {header.get('typ')!r}, not at+jwt (RFC 9068)")
    claims = verified_claims(step, token, keys, server, issuer, audience, REQUIRED_CLAIMS)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if audiences != [audience]:
        fail(step, f"aud {claims['aud']!r}, not only {audience!r}")
    if claims["sub"] != user["sub"]:
        fail(step, f"sub {claims['sub']!r}, not the user's {user['sub']!r}")
    if claims.get("subject_issuer") != idp_issuer:
        fail(step, f"subject_issuer {claims.get('subject_issuer')!r}, not {idp_issuer!r}")
    if claims.get("client_id") != actor.spiffe_id:
        fail(step, f"client_id {claims.get('client_id')!r}, not {actor.spiffe_id!r}")
    if not same_scope(claims.get("scope"), scope):
        fail(step, f"scope {claims.get('scope')!r}, not narrowed to {scope!r}")
    if claims["exp"] > user["exp"]:
        fail(step, f"exp {claims['exp']} outlives the user token's {user['exp']}")
    for name in ("email", "groups"):
        if claims.get(name) != user.get(name):
            fail(step, f"{name} {claims.get(name)!r}, not the user's {user.get(name)!r}")
    if actors(claims) != chain:
        fail(step, f"act {claims.get('act')!r}, not the chain {chain}")
    if claims.get("cnf", {}).get("x5t#S256") != actor.thumbprint:
        fail(
            step,
            f"cnf {claims.get('cnf')!r} is not {actor.name}'s certificate {actor.thumbprint}",
        )
    return claims


def main():
    if len(sys.argv) != 7:
        fail(
            "arguments",
            "token_exchange.py ISSUER CA_BUNDLE ORDERS_DIR PAYMENTS_DIR USER_TOKEN IDP_ISSUER",
        )
    issuer, ca_bundle, orders_dir, payments_dir, user_token, idp_issuer = sys.argv[1:7]
    try:
        user = jwt.decode(user_token, options={"verify_signature": False})
    except Exception as error:  # noqa: BLE001
        fail("arguments", f"USER_TOKEN is not a JWT: {error!r}")
    if user.get("iss") != idp_issuer or "sub" not in user or "exp" not in user:
        fail("arguments", f"USER_TOKEN claims {user} are not a user's from {idp_issuer}")

    server = metadata(issuer, "oauth-authorization-server")
    if server.get("issuer") != issuer:
        fail("discovery", f"issuer {server.get('issuer')!r}, not {issuer!r}")
    if TOKEN_EXCHANGE not in server.get("grant_types_supported", []):
        fail("discovery", f"no {TOKEN_EXCHANGE} in {server}")
    token_endpoint = server.get("mtls_endpoint_aliases", {}).get("token_endpoint")
    if not token_endpoint or "jwks_uri" not in server:
        fail("discovery", f"no mTLS token endpoint or jwks_uri in {server}")
    orders = Service("orders", orders_dir)
    payments = Service("payments", payments_dir)

    # orders: the user's token for one to payments, through authlib. authlib
    # has no token-exchange helper, but fetch_token takes any grant_type and
    # puts every other keyword argument into the form body (as long as its
    # value is not empty), so nothing odd is needed. What it adds on its own:
    # client_id=<SPIFFE ID> in the body, which is how auth method "none"
    # names the client (RFC 8705 section 2 wants client_id with
    # tls_client_auth too). It would also add the session's scope had none
    # been given. requested_token_type, optional, is sent here and left out
    # of the requests call below, so both forms are tried.
    session = OAuth2Session(client_id=orders.spiffe_id, token_endpoint_auth_method="none")
    session.cert = (orders.cert, orders.key)
    session.verify = ca_bundle
    sent = []
    # Scopes only narrow along the chain: what payments will pass on to
    # ledger must already be in the token it gets.
    form = exchange_form(user_token, JWT_TOKEN_TYPE, "payments", "payments:charge ledger:write")
    form["requested_token_type"] = ACCESS_TOKEN_TYPE
    try:
        answer = session.fetch_token(
            token_endpoint,
            hooks={"response": lambda response, *_, **__: sent.append(response.request)},
            timeout=10,
            **form,
        )
    except Exception as error:  # noqa: BLE001
        fail("exchange for payments", repr(error))
    # What went on the wire: a form body with every parameter, none in the URL.
    request = sent[-1] if sent else None
    if request is None or request.method != "POST" or urlsplit(request.url).query:
        fail("exchange for payments", f"authlib sent {request and (request.method, request.url)}")
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        fail("exchange for payments", f"authlib sent {request.headers.get('Content-Type')}")
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    posted = parse_qs(body or "")
    expected = {name: [value] for name, value in form.items()}
    expected["client_id"] = [orders.spiffe_id]
    if posted != expected:
        fail("exchange for payments", f"authlib posted {posted}, not {expected}")
    check_answer("exchange for payments", answer, "ledger:write payments:charge")
    payments_token = answer["access_token"]

    # payments: the token it was given for one to ledger, with requests alone.
    def exchange(scope):
        try:
            return requests.post(
                token_endpoint,
                data={
                    **exchange_form(payments_token, ACCESS_TOKEN_TYPE, "ledger", scope),
                    "client_id": payments.spiffe_id,
                },
                cert=(payments.cert, payments.key),
                verify=ca_bundle,
                timeout=10,
            )
        except Exception as error:  # noqa: BLE001
            fail("exchange for ledger", repr(error))

    response = exchange("ledger:write")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        fail("exchange for ledger", f"HTTP {response.status_code}: {response.text}")
    check_answer("exchange for ledger", answer, "ledger:write")
    ledger_token = answer["access_token"]

    keys = jwt.PyJWKClient(server["jwks_uri"])

    def verified(step, token, audience, scope, actor, chain):
        return verify(
            step, token, server, keys, issuer, audience, scope, actor, chain, user, idp_issuer
        )

    payments_claims = verified(
        "payments token",
        payments_token,
        "payments",
        "ledger:write payments:charge",
        orders,
        [orders.spiffe_id],
    )
    ledger_claims = verified(
        "ledger token",
        ledger_token,
        "ledger",
        "ledger:write",
        payments,
        [payments.spiffe_id, orders.spiffe_id],
    )

    # More than the delegation (and the user token) allows: refused, RFC
    # 6749 section 5.2.
    response = exchange("ledger:write ledger:admin")
    try:
        refusal = response.json()
    except ValueError:
        refusal = None
    if (
        response.status_code != 400
        or not isinstance(refusal, dict)
        or refusal.get("error") != "invalid_scope"
    ):
        fail("refusal", f"HTTP {response.status_code}: {response.text}, not 400 invalid_scope")

    print(
        "ok "
        + json.dumps(
            {
                "payments_token": payments_token,
                "ledger_token": ledger_token,
                "orders": orders.spiffe_id,
                "payments": payments.spiffe_id,
                "payments_claims": payments_claims,
                "ledger_claims": ledger_claims,
            }
        )
    )


if __name__ == "__main__":
    main()
