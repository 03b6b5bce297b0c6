"""What the outside-client scripts share: how they report, how they find
certd's metadata from the issuer (as a library pointed at the issuer does),
a client certificate's SPIFFE ID and RFC 8705 thumbprint (cryptography),
and PyJWT's verification of an access token. The standard library at the
top; each third-party library is imported by the function that uses it."""

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


def certificate_identity(cert_path):
    """The SPIFFE ID (the URI SAN) of the PEM certificate at `cert_path`,
    and its thumbprint as `cnf.x5t#S256` names it (RFC 8705: base64url,
    unpadded, of the SHA-256 of the DER)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    with open(cert_path, "rb") as pem:
        certificate = x509.load_pem_x509_certificate(pem.read())
    spiffe_id = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)[0]
    der = certificate.public_bytes(Encoding.DER)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    return spiffe_id, thumbprint


def verified_claims(step, token, keys, server, issuer, audience, required):
    """PyJWT's verification of `token` with the key `keys` (a PyJWKClient on
    the discovered jwks_uri) names, the algorithms discovery lists, `issuer`,
    `audience` and the `required` claims: the claims, or `FAILED <step>`."""
    import jwt

    try:
        signing_key = keys.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            signing_key.key,
            algorithms=server.get("id_token_signing_alg_values_supported") or ["ES256"],
            audience=audience,
            issuer=issuer,
            options={"require": required},
        )
    except Exception as error:  # noqa: BLE001
        fail(step, repr(error))
