"""TLS on the serving TLS port (8112 for Go, 18112 for Sluice), v1.23.0 env.

Both sidecars turn TLS on when ``tls.crt`` and ``tls.key`` exist in
``/var/lib/knative/certs`` at start (Go's path is compiled in; Sluice reads the same default).
``run.sh`` mounts a private tmpfs on ``/var/lib`` for the run, so the certificate written
here (self-signed, by ``openssl``) is seen by nobody else; it is removed after the module.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.client import app_saw, build, exchange, get, parse
from tests.conformance.compare import on_both, same
from tests.conformance.peers import V123, Pair, Sidecar, running_pair

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(60)]

CERTS = Path("/var/lib/knative/certs")


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if os.environ.get("CONFORMANCE_PRIVATE_VAR_LIB") != "1" or not os.path.ismount("/var/lib"):
        pytest.fail("the TLS cases need run.sh's private /var/lib")
    CERTS.mkdir(parents=True)
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=hello.default.svc",
             "-addext", "subjectAltName=DNS:hello.default.svc,IP:127.0.0.1",
             "-keyout", str(CERTS / "tls.key"), "-out", str(CERTS / "tls.crt")],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        with running_pair(V123, tmp_path_factory.mktemp("tls")) as p:
            yield p
    finally:
        shutil.rmtree(CERTS.parent)


def tls_port(s: Sidecar) -> int:
    return s.ports[1]


def client_context(**kw: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(CERTS / "tls.crt"))
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def over_tls(s: Sidecar, ctx: ssl.SSLContext, raw: bytes) -> tuple[str | None, str | None, bytes]:
    """(TLS version, ALPN protocol, response bytes) of one request over a fresh connection."""
    with (
        socket.create_connection(("127.0.0.1", tls_port(s)), timeout=10) as raw_sock,
        ctx.wrap_socket(raw_sock, server_hostname="hello.default.svc") as sock,
    ):
        sock.sendall(raw)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            pass
        return sock.version(), sock.selected_alpn_protocol(), data


def test_request_over_tls(tls_pair: Pair) -> None:
    def script(s: Sidecar) -> tuple[str | None, int, list[tuple[str, str]]]:
        version, _, data = over_tls(s, client_context(), build("/headers", [("X-A", "1")]))
        resp = parse(data)
        return version, resp.status, app_saw(resp)

    version, status, seen = same(tls_pair, script)
    assert version == "TLSv1.3" and status == 200 and ("x-a", "1") in seen


def test_tls12_client_is_refused(tls_pair: Pair) -> None:
    # Knative's default minimum (QUEUE_PROXY_TLS_MIN_VERSION empty) is TLS 1.3 on both.
    # Compared: refused or not. Go sends a protocol_version alert before closing, Sluice's
    # OpenSSL server closes without one; the client fails the handshake either way.
    def script(s: Sidecar) -> str:
        ctx = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        try:
            over_tls(s, ctx, build("/status/200"))
        except (ssl.SSLError, ConnectionResetError):
            return "refused"
        return "accepted"

    assert same(tls_pair, script) == "refused"


def test_alpn_http11(tls_pair: Pair) -> None:
    def script(s: Sidecar) -> tuple[str | None, int]:
        ctx = client_context()
        ctx.set_alpn_protocols(["http/1.1"])
        _, alpn, data = over_tls(s, ctx, build("/status/200"))
        return alpn, parse(data).status

    assert same(tls_pair, script) == ("http/1.1", 200)


def handshake_alpn(s: Sidecar, protocols: list[str]) -> str | None:
    ctx = client_context()
    ctx.set_alpn_protocols(protocols)
    with (
        socket.create_connection(("127.0.0.1", tls_port(s)), timeout=10) as raw_sock,
        ctx.wrap_socket(raw_sock, server_hostname="hello.default.svc") as sock,
    ):
        return sock.selected_alpn_protocol()


def test_alpn_h2_offered_first(tls_pair: Pair) -> None:
    """Deliberate difference: Go's TLS listener speaks HTTP/2, Sluice's HTTP/1.1 only.

    Go's server picks ``h2`` when offered; Sluice's picks ``http/1.1`` from the same offer, so
    every client that offers both (browsers, curl, Go's own transport) carries on in HTTP/1.1.
    Knative's own callers (the activator, ingresses) speak HTTP/1.1 to the sidecar unless the
    revision is an h2c one, which is plain text, not this port.
    """
    go, sluice = on_both(tls_pair, lambda s: handshake_alpn(s, ["h2", "http/1.1"]))
    assert (go, sluice) == ("h2", "http/1.1")


def test_plain_http_to_the_tls_port(tls_pair: Pair) -> None:
    """Known difference, not fixed: plain HTTP sent to the TLS port.

    Go's TLS server recognises an HTTP request line in place of a ClientHello and answers
    ``HTTP/1.0 400 Bad Request`` ("Client sent an HTTP request to an HTTPS server"); Sluice's
    listener hands the bytes to OpenSSL, whose handshake fails, and closes the connection.
    Either way the request is refused; answering it would mean sniffing bytes before TLS.
    """

    def script(s: Sidecar) -> bytes:
        try:
            data = exchange(tls_port(s), build("/status/200"), timeout=5)
        except ConnectionResetError:
            data = b""
        return data.split(b"\r\n", 1)[0]

    go, sluice = on_both(tls_pair, script)
    assert (go, sluice) == (b"HTTP/1.0 400 Bad Request", b"")


def test_plain_serving_port_still_serves(tls_pair: Pair) -> None:
    assert same(tls_pair, lambda s: get(s.port, "/status/200").comparable())[0] == 200


def test_admin_port_stays_plain_http(tls_pair: Pair) -> None:
    assert same(tls_pair, lambda s: get(s.admin_port, "/").status) == 404
