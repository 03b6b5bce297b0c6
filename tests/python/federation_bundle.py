"""Fetches certd's SPIFFE bundle endpoint as a federating peer does under
the `https_spiffe` profile (SPIFFE Federation §5.2.2): TLS with the
server's chain checked against the trust bundle held for the domain and
the server authenticated by its SPIFFE ID, not a host name (Python `ssl`
and `cryptography`). Then parses the document with joserfc, a JOSE
library nobody here wrote, and checks it against the standard (SPIFFE
Trust Domain and Bundle §4): each `x509-svid` key has one `x5c`
certificate whose public key is the key's, and the `x5c` certificates are
the roots in bundle.pem; each `jwt-svid` key has a `kid`.

Usage: federation_bundle.py URL BUNDLE_PEM EXPECTED_SPIFFE_ID
Prints `ok {"spiffe_sequence", "spiffe_refresh_hint", "x509_keys",
"jwt_keys"}` (JSON), or `FAILED <step>: <why>` and exits 1.
"""

import base64
import json
import socket
import ssl
import sys
import urllib.parse

from outside import fail


def fetch(url, bundle_pem, expected_id):
    from cryptography import x509

    parsed = urllib.parse.urlparse(url)
    context = ssl.create_default_context(cafile=bundle_pem)
    # https_spiffe: the peer is named by its SPIFFE ID, checked below,
    # not by a DNS name.
    context.check_hostname = False
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=parsed.hostname) as tls:
                served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                request = (
                    f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
                    "Connection: close\r\n\r\n"
                )
                tls.sendall(request.encode())
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        fail("tls", f"{url}: {error!r}")
    uris = served.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [expected_id]:
        fail("spiffe-id", f"the endpoint presented {uris}, not [{expected_id!r}]")
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        fail("http", status.decode(errors="replace"))
    if b"transfer-encoding: chunked" in head.lower():
        fail("http", "chunked answer; expected a Content-Length")
    return body


def main():
    url, bundle_pem, expected_id = sys.argv[1:4]
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from joserfc.jwk import KeySet
    from joserfc.registry import JWK_PARAMETER_REGISTRY, KeyParameter, in_choices

    # RFC 7517 §4.2: "other values MAY be used"; the SPIFFE bundle's are
    # `x509-svid` and `jwt-svid`. joserfc checks `use` against a registry it
    # lets applications extend; every other member is checked as it is.
    JWK_PARAMETER_REGISTRY["use"] = KeyParameter(
        "Public Key Use", in_choices(["sig", "enc", "x509-svid", "jwt-svid"])
    )
    body = fetch(url, bundle_pem, expected_id)
    try:
        document = json.loads(body)
    except ValueError as error:
        fail("json", repr(error))
    try:
        key_set = KeySet.import_key_set(document)
    except Exception as error:  # noqa: BLE001
        fail("joserfc", f"the key set does not import: {error!r}")
    if len(key_set.keys) != len(document["keys"]):
        fail("joserfc", f"{len(key_set.keys)} keys imported of {len(document['keys'])}")
    with open(bundle_pem, "rb") as pem:
        roots = [
            certificate.public_bytes(Encoding.DER)
            for certificate in x509.load_pem_x509_certificates(pem.read())
        ]
    x5c_roots, jwt_keys = [], 0
    for key, raw in zip(key_set.keys, document["keys"]):
        use = raw.get("use")
        if use == "x509-svid":
            chain = raw.get("x5c") or []
            if len(chain) != 1:
                fail("x5c", f"an x509-svid key has {len(chain)} x5c certificates, not 1")
            der = base64.b64decode(chain[0])
            public = x509.load_der_x509_certificate(der).public_key()
            spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            mine = key.as_pem(private=False)
            if spki != _der_of_pem(mine):
                fail("x5c", "an x509-svid key's parameters are not its certificate's key")
            x5c_roots.append(der)
        elif use == "jwt-svid":
            if not raw.get("kid"):
                fail("jwt-svid", "a jwt-svid key without kid")
            jwt_keys += 1
        else:
            fail("use", f"a key with use {use!r}")
    if x5c_roots != roots:
        fail("roots", f"x5c holds {len(x5c_roots)} certificates, bundle.pem {len(roots)}, or they differ")
    sequence = document.get("spiffe_sequence")
    hint = document.get("spiffe_refresh_hint")
    if not isinstance(sequence, int) or not isinstance(hint, int):
        fail("members", f"spiffe_sequence {sequence!r}, spiffe_refresh_hint {hint!r}")
    summary = {
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": hint,
        "x509_keys": len(x5c_roots),
        "jwt_keys": jwt_keys,
    }
    print("ok " + json.dumps(summary))


def _der_of_pem(pem):
    lines = pem.decode().strip().splitlines() if isinstance(pem, bytes) else pem.strip().splitlines()
    return base64.b64decode("".join(line for line in lines if not line.startswith("-----")))


if __name__ == "__main__":
    main()
