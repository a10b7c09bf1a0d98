"""gRPC through ``sluice up``: client → activator → queue-proxy → app, all h2c, from zero."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.e2e.test_serving_support import EXAMPLES, FAST_AUTOSCALER, sluice_up, wait_for

SERVICE = "/sluice.example.Echo/"


def channel(port: int) -> grpc.Channel:
    # The activator routes by Host, which HTTP/2 carries as :authority.
    return grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.default_authority", "grpc-echo.default.localhost"),
            ("grpc.enable_http_proxy", 0),
        ],
    )


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_grpc_streams_and_unary_calls_pass_intact_and_wake_a_zero_revision(
    tmp_path: Path,
) -> None:
    manifests = (EXAMPLES / "grpc" / "service.yaml", EXAMPLES / "hello.yaml")
    with sluice_up(tmp_path, *manifests, autoscaler=FAST_AUTOSCALER) as s:
        s.wait_ready("grpc-echo", "grpc-echo-00001")
        s.wait_ready("hello", "hello-v1")
        with channel(s.port) as ch:
            bidi = ch.stream_stream(SERVICE + "Bidi")
            sent = [b"message-%d" % i for i in range(1000)]
            assert list(bidi(iter(sent), timeout=30)) == sent

            unary = ch.unary_unary(SERVICE + "Unary")
            calls = [unary.future(b"%d" % i, timeout=30) for i in range(200)]
            assert [call.result() for call in calls] == [b"echo:%d" % i for i in range(200)]
            revisions = {dict(call.initial_metadata())["x-revision"] for call in calls}
            assert revisions == {"grpc-echo-00001"}

            with pytest.raises(grpc.RpcError) as failed:
                ch.unary_unary(SERVICE + "Fail")(b"x", timeout=10)
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            assert failed.value.details() == "no such thing: x"

        # Idle, it goes to zero; the next call is held by the activator until a pod is up.
        wait_for(lambda: s.revisions()["grpc-echo-00001"]["actual"] == 0, 40, "at zero")
        with channel(s.port) as ch:
            assert ch.unary_unary(SERVICE + "Unary")(b"cold", timeout=30) == b"echo:cold"
        assert s.revisions()["grpc-echo-00001"]["actual"] >= 1


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_the_activator_speaks_each_revisions_protocol_whatever_the_client_spoke(
    tmp_path: Path,
) -> None:
    # As Knative's ingress does: an HTTP/2 client reaches an HTTP/1.1 revision over HTTP/1.1
    # (the app below is Python's http.server), an HTTP/1.1 client an h2c one over h2c.
    nghttp = shutil.which("nghttp")
    assert nghttp is not None, "nghttp (Debian nghttp2-client) is missing; .ci/run installs it"
    manifests = (EXAMPLES / "grpc" / "service.yaml", EXAMPLES / "hello.yaml")
    with sluice_up(tmp_path, *manifests) as s:
        s.wait_ready("hello", "hello-v1")
        s.wait_ready("grpc-echo", "grpc-echo-00001")
        url = f"http://127.0.0.1:{s.port}/"
        h2_to_http1 = subprocess.run(
            [nghttp, url, "-H", ":authority: hello.default.localhost"],
            capture_output=True,
            timeout=20,
            check=True,
        )
        assert json.loads(h2_to_http1.stdout)["revision"] == "hello-v1"
        # An HTTP/1.1 client's gRPC-shaped POST reaches grpcio (which resets anything not
        # gRPC-shaped) over h2c: its trailers-only answer names the unknown method.
        http1_to_h2c = subprocess.run(
            ["curl", "-s", "-D", "-", "-o", "/dev/null", "-H", "Host: grpc-echo.default.localhost",
             "-H", "Content-Type: application/grpc", "-H", "TE: trailers", "--data-binary", "",
             url + "no.Such/Method"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        head = http1_to_h2c.stdout.lower().splitlines()
        assert head[0].startswith("http/1.1 200")
        assert "grpc-status: 12" in head  # UNIMPLEMENTED
