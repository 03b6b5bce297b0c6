"""An operator on certd's admin API over mTLS, as a plain grpcio client with
stubs generated from proto/certd by grpc_tools.protoc, holding an operator
certificate whose role is `issuer` for the service `billing` only.

Run by tests/py_spiffe.rs. Issues for billing (allowed), then is refused
PERMISSION_DENIED for another service and for an RPC its role lacks, with
the messages certd documents. Prints one line per fact, then `ok`; any
failure prints `FAILED <step>: <why>` and exits 1.

usage: operator_roles.py STUB_DIR ADDRESS BUNDLE_PEM CERT_PEM KEY_PEM
"""

import faulthandler
import sys

faulthandler.dump_traceback_later(60, exit=True)

stub_dir, address, bundle_file, cert_file, key_file = sys.argv[1:6]
sys.path.insert(0, stub_dir)

import grpc  # noqa: E402
from certd.v1 import admin_pb2  # noqa: E402
from grpc_outside import TIMEOUT, admin_over_mtls, fail, new_key_and_csr  # noqa: E402,F401


def csr_der():
    return new_key_and_csr()[1]


admin = admin_over_mtls(address, bundle_file, cert_file, key_file)

try:
    issued = admin.IssueForCi(
        admin_pb2.IssueForCiRequest(service="billing", csr_der=csr_der()), timeout=TIMEOUT
    )
except grpc.RpcError as error:
    fail("issue for billing", error)
print(f"issued billing serial {issued.serial}")


def refused(step, call):
    try:
        call()
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.PERMISSION_DENIED:
            fail(step, error)
        print(f"refused {step}: {error.details()}")
        return
    fail(step, RuntimeError("it was allowed"))


refused(
    "issue for web",
    lambda: admin.IssueForCi(
        admin_pb2.IssueForCiRequest(service="web", csr_der=csr_der(), unregistered=True),
        timeout=TIMEOUT,
    ),
)
refused("list audit", lambda: admin.ListAudit(admin_pb2.ListAuditRequest(), timeout=TIMEOUT))
print("ok")
