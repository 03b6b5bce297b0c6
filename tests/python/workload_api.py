"""A workload on certd's node agent, as py-spiffe's own WorkloadApiClient.

Run by tests/py_spiffe.rs with SPIFFE_ENDPOINT_SOCKET as the only
configuration. Prints one line per fact the Rust test checks, then `ok`;
any failure prints `FAILED <step>: <why>` and exits 1.

usage: workload_api.py TRUST_DOMAIN ALLOWED_AUDIENCE REFUSED_AUDIENCE
"""

import faulthandler
import hashlib
import sys

faulthandler.dump_traceback_later(60, exit=True)

import grpc  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient  # noqa: E402

from chains import check_chain  # noqa: E402


def fail(step, error):
    """Prints why `step` failed, with the gRPC status under py-spiffe's error."""
    cause = error.__cause__
    if isinstance(cause, grpc.Call):
        print(f"FAILED {step}: {error} [grpc {cause.code().name}: {cause.details()}]")
    else:
        print(f"FAILED {step}: {type(error).__name__}: {error}")
    sys.exit(1)


def grpc_code(error):
    """The gRPC status code under a py-spiffe error, or None."""
    cause = error.__cause__
    return cause.code().name if isinstance(cause, grpc.Call) else None


def fingerprint(certificate):
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def main():
    trust_domain_name, allowed, refused = sys.argv[1:4]
    trust_domain = TrustDomain(trust_domain_name)
    # No socket path: py-spiffe reads SPIFFE_ENDPOINT_SOCKET.
    client = WorkloadApiClient()

    try:
        svid = client.fetch_x509_svid(timeout=20)
    except Exception as error:
        fail("fetch_x509_svid", error)
    print(f"x509-svid {svid.spiffe_id}")
    print(f"x509-svid-chain-length {len(svid.cert_chain)}")

    try:
        bundles = client.fetch_x509_bundles(timeout=20)
    except Exception as error:
        fail("fetch_x509_bundles", error)
    bundle = bundles.get_bundle_for_trust_domain(trust_domain)
    if bundle is None:
        fail("fetch_x509_bundles", Exception(f"no bundle for {trust_domain_name}"))
    roots = sorted(fingerprint(root) for root in bundle.x509_authorities)
    print(f"x509-bundle {trust_domain_name} {','.join(roots)}")
    # The SVID chains to a root of that bundle: leaf <- intermediate <- root.
    try:
        check_chain(svid.cert_chain, bundle.x509_authorities)
    except Exception as error:
        fail("x509-svid chains to the bundle", error)
    print("x509-svid-verified")

    try:
        jwt_svid = client.fetch_jwt_svid(audience={allowed}, timeout=20)
    except Exception as error:
        fail(f"fetch_jwt_svid for {allowed}", error)
    print(f"jwt-svid {jwt_svid.spiffe_id} aud={','.join(sorted(jwt_svid.audience))}")

    try:
        client.fetch_jwt_svid(audience={refused}, timeout=20)
        fail(f"fetch_jwt_svid for {refused}", Exception("a token was minted"))
    except SystemExit:
        raise
    except Exception as error:
        code = grpc_code(error)
        if code != "PERMISSION_DENIED" or refused not in str(error):
            fail(f"refusal of {refused}", error)
        print(f"jwt-svid-refused {refused} {code}")

    try:
        jwt_bundles = client.fetch_jwt_bundles(timeout=20)
    except Exception as error:
        fail("fetch_jwt_bundles", error)
    jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(trust_domain)
    if jwt_bundle is None:
        fail("fetch_jwt_bundles", Exception(f"no JWT bundle for {trust_domain_name}"))
    print(f"jwt-bundle {trust_domain_name} {','.join(sorted(jwt_bundle.jwt_authorities))}")
    # The JWT bundle alone verifies the token (py-spiffe checks signature,
    # kid, alg, exp and aud itself).
    try:
        local = JwtSvid.parse_and_validate(jwt_svid.token, jwt_bundle, {allowed})
    except Exception as error:
        fail("JwtSvid.parse_and_validate with the JWT bundle", error)
    print(f"jwt-svid-verified-locally {local.spiffe_id}")

    try:
        validated = client.validate_jwt_svid(jwt_svid.token, allowed, timeout=20)
    except Exception as error:
        fail("validate_jwt_svid", error)
    print(f"jwt-svid-validated {validated.spiffe_id} aud={allowed}")
    try:
        client.validate_jwt_svid(jwt_svid.token, refused, timeout=20)
        fail(f"validate_jwt_svid for {refused}", Exception("the agent accepted it"))
    except SystemExit:
        raise
    except Exception as error:
        code = grpc_code(error)
        if code is None:
            fail(f"validate_jwt_svid for {refused}", error)
        print(f"jwt-svid-validation-refused {refused} {code}")

    # Bytes that are not a JwtSvidRequest, through grpcio's own channel on
    # the same socket (C-core's :authority again): the caller's fault.
    import os

    raw = grpc.insecure_channel(os.environ["SPIFFE_ENDPOINT_SOCKET"])
    try:
        raw.unary_unary("/SpiffeWorkloadAPI/FetchJWTSVID")(
            b"\x0a\x0a\x01", metadata=(("workload.spiffe.io", "true"),), timeout=10
        )
        fail("malformed FetchJWTSVID", Exception("the agent answered"))
    except grpc.RpcError as error:
        print(f"malformed-request {error.code().name}: {error.details()}")
    raw.close()

    client.close()
    print("ok")


if __name__ == "__main__":
    main()
