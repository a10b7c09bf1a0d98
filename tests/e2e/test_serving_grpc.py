"""gRPC through ``sluice up``: client → activator → queue-proxy → app, all h2c, from zero."""

from __future__ import annotations

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
    with sluice_up(tmp_path, EXAMPLES / "grpc.yaml", autoscaler=FAST_AUTOSCALER) as s:
        s.wait_ready("grpc-echo", "grpc-echo-00001")
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
