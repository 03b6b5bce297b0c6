"""One side of a mutual TLS connection between two workloads of certd's node
agent, each using only a py-spiffe X509Source (from SPIFFE_ENDPOINT_SOCKET)
through spiffe-tls, and accepting only the other's SPIFFE ID.

Run by tests/py_spiffe.rs. The server prints `listening PORT` once it
accepts connections; both sides print `<role> is ID` and `<role> saw ID`
(the peer's SPIFFE ID, from its verified certificate), then `ok`. Any
failure prints `FAILED <step>: <why>` and exits 1.

usage: mtls_peer.py server PEER_ID
       mtls_peer.py client PORT PEER_ID
"""

import faulthandler
import sys

faulthandler.dump_traceback_later(60, exit=True)

from cryptography import x509  # noqa: E402
from spiffe import SpiffeId, WorkloadApiClient, X509Source  # noqa: E402
from spiffetls import ListenOptions, ServerTlsMode, dial, listen  # noqa: E402
from spiffetls.tlsconfig.authorize import authorize_id  # noqa: E402


def fail(step, error):
    print(f"FAILED {step}: {type(error).__name__}: {error}", flush=True)
    sys.exit(1)


def x509_source():
    """The workload's X509Source, configured by SPIFFE_ENDPOINT_SOCKET alone.

    X509Source retries a failing stream until its timeout; when it gives up,
    one direct fetch shows the Workload API's actual answer.
    """
    try:
        return X509Source(timeout_in_seconds=15)
    except Exception as error:
        try:
            WorkloadApiClient().fetch_x509_svid(timeout=10)
            detail = "a direct fetch then succeeded"
        except Exception as fetch_error:
            detail = f"a direct fetch says: {fetch_error}"
        fail("X509Source", Exception(f"{error}; {detail}"))


def own_id(source):
    """The workload's own SPIFFE ID, from the source's current SVID."""
    return source.get_x509_context().default_svid.spiffe_id


def peer_id(connection):
    """The SPIFFE ID in the peer's (already verified) leaf certificate."""
    certificate = connection.get_peer_certificate().to_cryptography()
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise Exception(f"the peer's certificate has URIs {uris}, not one SPIFFE ID")
    return uris[0]


def serve(expected_peer):
    source = x509_source()
    print(f"server is {own_id(source)}", flush=True)
    options = ListenOptions(
        tls_mode=ServerTlsMode.MTLS,
        authorize_fn=authorize_id(SpiffeId(expected_peer)),
    )
    try:
        listener = listen("127.0.0.1:0", source, options)
    except Exception as error:
        fail("listen", error)
    print(f"listening {listener.getsockname()[1]}", flush=True)
    try:
        connection, _ = listener.accept()
        connection.do_handshake()
        seen = peer_id(connection)
        print(f"server saw {seen}", flush=True)
        greeting = connection.recv(1024).decode()
        connection.sendall(f"hello {seen}, this is {own_id(source)}\n".encode())
        connection.shutdown()
    except Exception as error:
        fail("accept a client", error)
    print(f"server got {greeting.strip()}")
    listener.close()
    source.close()
    print("ok")


def connect(port, expected_peer):
    source = x509_source()
    print(f"client is {own_id(source)}", flush=True)
    try:
        connection = dial(
            f"127.0.0.1:{port}",
            source,
            authorize_fn=authorize_id(SpiffeId(expected_peer)),
        )
        seen = peer_id(connection)
        print(f"client saw {seen}", flush=True)
        connection.sendall(f"hello from {own_id(source)}\n".encode())
        answer = connection.recv(1024).decode()
        connection.close()
    except Exception as error:
        fail("connect to the server", error)
    print(f"client got {answer.strip()}")
    source.close()
    print("ok")


def main():
    role = sys.argv[1]
    if role == "server":
        serve(sys.argv[2])
    elif role == "client":
        connect(int(sys.argv[2]), sys.argv[3])
    else:
        fail("arguments", Exception(f"unknown role {role!r}"))


if __name__ == "__main__":
    main()
