"""What the grpcio outside clients (grpc_api.py, operator_roles.py,
list_pages.py) share: the call limit, the failure line the Rust tests read,
a fresh key with a CSR for it, and an operator's channel to the admin API."""

import sys

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

TIMEOUT = 20


def fail(step, error):
    if isinstance(error, grpc.Call):
        print(f"FAILED {step}: grpc {error.code().name}: {error.details()}")
    else:
        print(f"FAILED {step}: {type(error).__name__}: {error}")
    sys.exit(1)


def new_key_and_csr():
    """A P-256 key and a CSR for it with an empty subject: certd decides the
    names from the registration entry."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256()
    )
    return key, csr.public_bytes(serialization.Encoding.DER)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def admin_over_mtls(address, bundle_file, cert_file, key_file):
    """certd's admin API for the operator whose certificate and key these
    files hold; grpcio checks certd's certificate and name against the
    bundle. The generated stubs must be on sys.path."""
    from certd.v1 import admin_pb2_grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(bundle_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )
    return admin_pb2_grpc.AdminStub(grpc.secure_channel(address, credentials))
