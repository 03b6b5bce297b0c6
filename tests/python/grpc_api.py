"""A workload on certd's TCP gRPC API, as a plain grpcio client with stubs
generated from proto/certd by grpc_tools.protoc.

Run by tests/py_spiffe.rs. Bootstraps with a join token (the key and CSR
made here with `cryptography`), checks the certificate, renews over mTLS
with it, and checks that the used token is refused with the documented
code. Prints one line per fact the Rust test checks, then `ok`; any failure
prints `FAILED <step>: <why>` and exits 1.

It also bootstraps with a second join token in the wire's generic form
(`evidence`: the attestor's kind and bytes), and is refused for a kind no
attestor has and for one that is not a kind.

usage: grpc_api.py STUB_DIR ADDRESS BUNDLE_PEM_FILE JOIN_TOKEN GENERIC_JOIN_TOKEN
"""

import faulthandler
import hashlib
import sys

faulthandler.dump_traceback_later(60, exit=True)

stub_dir, address, bundle_file, join_token, generic_token = sys.argv[1:6]
sys.path.insert(0, stub_dir)

import grpc  # noqa: E402
from certd.v1 import ca_pb2, ca_pb2_grpc  # noqa: E402
from chains import check_chain  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from grpc_outside import TIMEOUT, fail, new_key_and_csr  # noqa: E402,F401


def public_der(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_issued(step, response, key, roots):
    """The certificate is for our key, names the SPIFFE ID it says, and
    chains to a root of the bundle."""
    chain = x509.load_pem_x509_certificates(response.chain_pem.encode())
    leaf = chain[0]
    if public_der(leaf.public_key()) != public_der(key.public_key()):
        fail(step, Exception("the certificate is not for the key of the CSR"))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [response.spiffe_id]:
        fail(step, Exception(f"the certificate names {uris}, the answer {response.spiffe_id}"))
    if format(leaf.serial_number, "x") != response.serial.lower().lstrip("0"):
        fail(step, Exception(f"serial {leaf.serial_number:x} is not {response.serial}"))
    try:
        check_chain(chain, roots)
    except Exception as error:
        fail(f"{step}: chain", error)


def mtls_channel(address, bundle_pem, key, chain_pem):
    """A channel to certd presenting `chain_pem` with `key`."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(
            root_certificates=bundle_pem,
            private_key=key_pem,
            certificate_chain=chain_pem.encode(),
        ),
    )


def main():
    bundle_pem = open(bundle_file, "rb").read()
    roots = x509.load_pem_x509_certificates(bundle_pem)
    # TLS with the bundle only: grpcio checks certd's certificate and name.
    channel = grpc.secure_channel(
        address, grpc.ssl_channel_credentials(root_certificates=bundle_pem)
    )
    ca = ca_pb2_grpc.CertificateAuthorityStub(channel)

    try:
        bundle = ca.GetTrustBundle(ca_pb2.GetTrustBundleRequest(), timeout=TIMEOUT)
    except grpc.RpcError as error:
        fail("GetTrustBundle", error)
    served = x509.load_pem_x509_certificates(bundle.trust_bundle_pem.encode())
    fingerprints = sorted(
        hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()
        for root in served
    )
    print(f"trust-bundle {bundle.trust_domain} {','.join(fingerprints)}")

    key, csr = new_key_and_csr()
    request = ca_pb2.IssueRequest(csr_der=csr, join_token=join_token)
    try:
        issued = ca.Issue(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        fail("Issue with the join token", error)
    check_issued("Issue", issued, key, roots)
    print(f"issued {issued.spiffe_id} serial {issued.serial}")

    try:
        status = ca.GetStatus(ca_pb2.GetStatusRequest(serial=issued.serial), timeout=TIMEOUT)
    except grpc.RpcError as error:
        fail("GetStatus", error)
    print(f"status {issued.serial} {ca_pb2.Status.Name(status.status)}")

    # The token was for one use: the same request again is refused.
    try:
        ca.Issue(request, timeout=TIMEOUT)
        fail("Issue with the used token", Exception("certd issued again"))
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            fail("Issue with the used token", error)
        print(f"refused used-token {error.code().name}: {error.details()}")

    # Renewal authenticates with the certificate just issued (mTLS).
    mtls = mtls_channel(address, bundle_pem, key, issued.chain_pem)
    new_key, new_csr = new_key_and_csr()
    try:
        renewed = ca_pb2_grpc.CertificateAuthorityStub(mtls).Renew(
            ca_pb2.RenewRequest(csr_der=new_csr), timeout=TIMEOUT
        )
    except grpc.RpcError as error:
        fail("Renew over mTLS", error)
    check_issued("Renew", renewed, new_key, roots)
    print(f"renewed {renewed.spiffe_id} serial {renewed.serial}")

    # A certificate renews once: once the renewed one has itself renewed,
    # the first one (a copied key, say) is refused, naming its successor.
    renewed_mtls = mtls_channel(address, bundle_pem, new_key, renewed.chain_pem)
    _, third_csr = new_key_and_csr()
    try:
        ca_pb2_grpc.CertificateAuthorityStub(renewed_mtls).Renew(
            ca_pb2.RenewRequest(csr_der=third_csr), timeout=TIMEOUT
        )
    except grpc.RpcError as error:
        fail("Renew with the renewed certificate", error)
    try:
        ca_pb2_grpc.CertificateAuthorityStub(mtls).Renew(
            ca_pb2.RenewRequest(csr_der=third_csr), timeout=TIMEOUT
        )
        fail("Renew of a superseded certificate", Exception("certd renewed it again"))
    except grpc.RpcError as error:
        print(f"refused second-renewal {error.code().name}: {error.details()}")
    renewed_mtls.close()

    # Without a client certificate there is nothing to renew.
    try:
        ca.Renew(ca_pb2.RenewRequest(csr_der=new_csr), timeout=TIMEOUT)
        fail("Renew without a certificate", Exception("certd renewed"))
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            fail("Renew without a certificate", error)
        print(f"refused no-certificate-renewal {error.code().name}")

    # The generic form: any attestor's evidence by its kind.
    generic_key, generic_csr = new_key_and_csr()
    evidence = ca_pb2.AttestationEvidence(kind="join-token", data=generic_token.encode())
    try:
        generic = ca.Issue(
            ca_pb2.IssueRequest(csr_der=generic_csr, evidence=evidence), timeout=TIMEOUT
        )
    except grpc.RpcError as error:
        fail("Issue with generic evidence", error)
    check_issued("generic Issue", generic, generic_key, roots)
    print(f"issued-generic {generic.spiffe_id} serial {generic.serial}")
    for kind, step in [("tpm", "unknown-kind"), ("Not A Kind", "malformed-kind")]:
        try:
            ca.Issue(
                ca_pb2.IssueRequest(
                    csr_der=generic_csr,
                    evidence=ca_pb2.AttestationEvidence(kind=kind, data=b"x"),
                ),
                timeout=TIMEOUT,
            )
            fail(f"Issue with kind {kind!r}", Exception("certd issued"))
        except grpc.RpcError as error:
            print(f"refused {step} {error.code().name}: {error.details()}")

    # Bytes that are not an IssueRequest: the caller's fault, named.
    try:
        channel.unary_unary("/certd.v1.CertificateAuthority/Issue")(b"\x0a\x0a\x01", timeout=TIMEOUT)
        fail("malformed Issue", Exception("certd answered"))
    except grpc.RpcError as error:
        print(f"malformed-request {error.code().name}: {error.details()}")

    channel.close()
    mtls.close()
    print("ok")


if __name__ == "__main__":
    main()
