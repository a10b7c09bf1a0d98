"""``SERVING_READINESS_PROBE`` decoded: the probes the queue-proxy runs against its pod.

The controller sends JSON ``corev1.Probe`` values it already rewrote (host 127.0.0.1, port
filled in, exec turned into TCP). Two shapes exist:

* one object: the user container's probe (every Knative version);
* an array of objects: the user container's probe followed by each sidecar's, when
  ``multi-container-probing`` is enabled (``ENABLE_MULTI_CONTAINER_PROBES=true``; Knative
  1.13 and later). The pod is ready only when every probe in it passes.

``parse_probes`` accepts either shape whatever ``ENABLE_MULTI_CONTAINER_PROBES`` says: the
controller keeps the two consistent, and reading the shape from the JSON itself cannot
mistake one for the other (Go's sidecar trusts the flag and would refuse a mismatch). A
``null`` array element, which Go's sidecar would crash on, is skipped. An empty value or an
empty array means "no probe": the pod is always ready.

Decoding is strict about types (an int field given a string or a float is an error), and
every error is one line saying where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class ProbeDecodeError(ValueError):
    """``SERVING_READINESS_PROBE`` is not a decodable probe; the message is one line."""


@dataclass(frozen=True, slots=True)
class HttpGetAction:
    host: str
    port: int | str
    path: str
    scheme: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TcpSocketAction:
    host: str
    port: int | str


@dataclass(frozen=True, slots=True)
class GrpcAction:
    """A ``grpc.health.v1.Health/Check`` probe on 127.0.0.1:``port``."""

    port: int
    #: The ``service`` field of the health check request ("" checks the server as a whole).
    service: str = ""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A decoded ``corev1.Probe``. At most one of the handlers is set in practice."""

    http_get: HttpGetAction | None = None
    tcp_socket: TcpSocketAction | None = None
    exec_: bool = False
    grpc: GrpcAction | None = None
    period_seconds: int = 0
    #: Seconds per normal-mode attempt (an int in JSON; a float is allowed for tests).
    timeout_seconds: float = 0
    success_threshold: int = 0
    failure_threshold: int = 0

    @property
    def aggressive(self) -> bool:
        return self.period_seconds == 0


def parse_probe(text: str) -> ProbeSpec | None:
    """Decode one ``corev1.Probe`` object. Empty means no probe (``None``).

    Raises ``ProbeDecodeError`` when the value is not JSON or does not have the
    ``corev1.Probe`` shape (wrong field types, a port that is neither int nor string).
    """
    if not text.strip():
        return None
    raw = _load(text)
    if not isinstance(raw, dict):
        raise ProbeDecodeError("a probe must be a JSON object")
    return _probe(raw, "")


def parse_probes(text: str) -> tuple[ProbeSpec, ...]:
    """Decode a probe object or an array of them (see the module docstring).

    Empty text, ``[]`` or an array of only ``null`` give ``()``: always ready.
    """
    if not text.strip():
        return ()
    raw = _load(text)
    if isinstance(raw, dict):
        return (_probe(raw, ""),)
    if not isinstance(raw, list):
        raise ProbeDecodeError("want a probe object or an array of probe objects")
    probes = []
    for i, item in enumerate(raw):
        if item is None:
            continue
        if not isinstance(item, dict):
            raise ProbeDecodeError(f"[{i}] must be a probe object")
        probes.append(_probe(item, f"[{i}]."))
    return tuple(probes)


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeDecodeError(f"not valid JSON: {exc}") from None


def _probe(raw: dict[str, Any], at: str) -> ProbeSpec:
    http_get = tcp = grpc = None
    if (h := raw.get("httpGet")) is not None:
        h = _obj(h, at + "httpGet")
        where = at + "httpGet.httpHeaders"
        headers = tuple(
            (_str(hd, "name", where), _str(hd, "value", where))
            for hd in _list(h.get("httpHeaders"), where)
        )
        http_get = HttpGetAction(
            host=_str(h, "host", at + "httpGet"),
            port=_port(h.get("port"), at + "httpGet.port"),
            path=_str(h, "path", at + "httpGet"),
            scheme=_str(h, "scheme", at + "httpGet") or "HTTP",
            headers=headers,
        )
    if (t := raw.get("tcpSocket")) is not None:
        t = _obj(t, at + "tcpSocket")
        tcp = TcpSocketAction(
            host=_str(t, "host", at + "tcpSocket"),
            port=_port(t.get("port"), at + "tcpSocket.port"),
        )
    if (g := raw.get("grpc")) is not None:
        g = _obj(g, at + "grpc")
        grpc = GrpcAction(
            port=_int(g, "port", at + "grpc."), service=_str(g, "service", at + "grpc")
        )
    return ProbeSpec(
        http_get=http_get,
        tcp_socket=tcp,
        exec_=raw.get("exec") is not None,
        grpc=grpc,
        period_seconds=_int(raw, "periodSeconds", at),
        timeout_seconds=_int(raw, "timeoutSeconds", at),
        success_threshold=_int(raw, "successThreshold", at),
        failure_threshold=_int(raw, "failureThreshold", at),
    )


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProbeDecodeError(f"{where} must be an object")
    return v


def _list(v: Any, where: str) -> list[dict[str, Any]]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ProbeDecodeError(f"{where} must be a list")
    return [_obj(item, where) for item in v]


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ProbeDecodeError(f"{where}.{key} must be a string")
    return v


def _int(obj: dict[str, Any], key: str, at: str = "") -> int:
    v = obj.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProbeDecodeError(f"{at}{key} must be an integer")
    return v


def _port(v: Any, where: str) -> int | str:
    # intstr.IntOrString: a JSON number or a string (a port name or digits).
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ProbeDecodeError(f"{where} must be an integer or a string")
    return v
