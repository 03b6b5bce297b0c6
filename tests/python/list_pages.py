"""An operator on certd's admin API over mTLS, as a plain grpcio client with
stubs generated from proto/certd by grpc_tools.protoc, paging
ListCertificates with the opaque tokens certd hands out.

Run by tests/py_spiffe.rs, which issued the certificates, revoked one and
wrote EXPECTED: one line per fact it knows, `all SERIAL` for every
certificate in the store, `good SERIAL` for the unrevoked ones latest
expiry first, and `revoked SERIAL`. This client pages every certificate
(newest first by issuance time, then serial), the good ones (by expiry,
latest first) and the revoked ones, a few at a time, and hands a token of
one order to a listing of the other and a malformed token, which certd
refuses INVALID_ARGUMENT. Prints one line per fact, then `ok`; any failure
prints `FAILED <step>: <why>` and exits 1.

usage: list_pages.py STUB_DIR ADDRESS BUNDLE_PEM CERT_PEM KEY_PEM EXPECTED
"""

import faulthandler
import sys

faulthandler.dump_traceback_later(60, exit=True)

stub_dir, address, bundle_file, cert_file, key_file, expected_file = sys.argv[1:7]
sys.path.insert(0, stub_dir)

import grpc  # noqa: E402
from certd.v1 import admin_pb2  # noqa: E402
from grpc_outside import TIMEOUT, admin_over_mtls, fail, read  # noqa: E402

# Small pages, so that every walk below crosses several of them.
LIMIT = 3


expected = {"all": [], "good": [], "revoked": []}
for line in read(expected_file).decode().splitlines():
    kind, serial = line.split()
    expected[kind].append(serial)

admin = admin_over_mtls(address, bundle_file, cert_file, key_file)


def page(step, **filters):
    try:
        return admin.ListCertificates(
            admin_pb2.ListCertificatesRequest(limit=LIMIT, **filters), timeout=TIMEOUT
        )
    except grpc.RpcError as error:
        fail(step, error)


def walk(step, **filters):
    """Every record of a listing, following next_page_token to the end,
    and the first page's token."""
    records, token, first_token, pages = [], "", None, 0
    while True:
        answer = page(f"{step} page {pages + 1}", page_token=token, **filters)
        pages += 1
        held = len(answer.certificates)
        check(step, held <= LIMIT, f"page {pages} holds {held}, over the limit")
        records.extend(answer.certificates)
        token = answer.next_page_token
        if first_token is None:
            first_token = token
        if not token:
            break
        # Only an answer without a token is the end; every one before it is
        # full (these listings are of every service, so no page stops short).
        check(step, held == LIMIT, f"page {pages} holds {held} with a token")
        if pages > 100:
            fail(step, AssertionError("more than 100 pages: the tokens go round"))
    print(f"{step}: {len(records)} certificates in {pages} pages of at most {LIMIT}")
    return records, first_token


def serials(records):
    return [record.serial for record in records]


def check(step, condition, why):
    if not condition:
        fail(step, AssertionError(why))


def strictly_descending(keys):
    return all(a > b for a, b in zip(keys, keys[1:]))


# Every certificate, newest first: issuance time, then serial (certd's
# serials are all 20 bytes, so their hex compares as their number does).
everything, issued_token = walk("all")
listed = serials(everything)
check("all", len(set(listed)) == len(listed), f"a serial is listed twice: {listed}")
unknown = [
    f"{r.serial} ({r.service}, {r.attestation})"
    for r in everything
    if r.serial not in expected["all"]
]
missing = set(expected["all"]) - set(listed)
check("all", not unknown and not missing, f"not expected: {unknown}; missing: {sorted(missing)}")
check(
    "all",
    strictly_descending([(r.issued_at_unix, int(r.serial, 16)) for r in everything]),
    f"not newest first: {[(r.issued_at_unix, r.serial) for r in everything]}",
)
check("all", issued_token, "the first page of every certificate has no token")
print("all: every serial once, newest first")

# The good ones go by expiry, latest first, in the order the TTLs give,
# which is not the issuance order; the revoked one is not among them.
good, expiry_token = walk("good", status="good")
check("good", serials(good) == expected["good"], f"{serials(good)} is not {expected['good']}")
check(
    "good",
    strictly_descending([(r.not_after_unix, int(r.serial, 16)) for r in good]),
    f"not latest expiry first: {[(r.not_after_unix, r.serial) for r in good]}",
)
check(
    "good",
    serials(good) != [s for s in listed if s in expected["good"]],
    "the expiry order is the issuance order: the test proves nothing",
)
check("good", expiry_token, "the first page of good certificates has no token")
check(
    "good",
    not set(expected["revoked"]) & set(serials(good)),
    f"a revoked certificate is listed as good: {expected['revoked']}",
)
print("good: latest expiry first, the revoked one left out")

revoked, _ = walk("revoked", status="revoked")
check(
    "revoked",
    serials(revoked) == expected["revoked"],
    f"{serials(revoked)} is not {expected['revoked']}",
)
check("revoked", all(r.status == "revoked" for r in revoked), "a record says otherwise")
print(f"revoked: {' '.join(serials(revoked))}")


def refused(step, words, **request):
    """The listing is refused INVALID_ARGUMENT with certd's `words`."""
    try:
        admin.ListCertificates(
            admin_pb2.ListCertificatesRequest(limit=LIMIT, **request), timeout=TIMEOUT
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or words not in error.details():
            fail(step, error)
        print(f"refused {step} {error.code().name}: {error.details()}")
        return
    fail(step, AssertionError("it was answered"))


MIXED = "belongs to a listing with other filters"
refused("issued-token-by-expiry", MIXED, status="good", page_token=issued_token)
refused("expiry-token-by-issuance", MIXED, page_token=expiry_token)
refused("malformed-token", "is not one certd handed out", page_token="not-a-token")
print("ok")
