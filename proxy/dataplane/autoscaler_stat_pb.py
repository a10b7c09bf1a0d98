"""Knative's autoscaler stat messages (package ``metrics``), wire-compatible proto3.

The queue-proxy serves one ``metrics.Stat`` on :9090/metrics; the activator sends
``metrics.WireStatMessages`` to the autoscaler over its websocket. No protoc is available at
build time, so the message classes are built once at import from a hand-written
``FileDescriptorProto`` in a private descriptor pool (so they cannot clash with any other
module that registers a ``metrics`` package). Callers see only the frozen ``Stat`` value and
the encode/decode functions; the protobuf classes stay private. ``encode_stat`` itself is the
library-free encoder of ``proxy.dataplane.autoscaler_stat`` (see there why), checked against
``encode_stat_pb``.

Encoding is standard proto3: doubles are fixed64 (wire type 1), fields at their default value
are omitted, and decoding accepts fields in any order and skips unknown ones.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from proxy.dataplane.autoscaler_stat import Stat, encode_stat

__all__ = [
    "Stat",
    "decode_stat",
    "decode_wire_stats",
    "encode_stat",
    "encode_stat_pb",
    "encode_wire_stats",
]


_FDP = descriptor_pb2.FieldDescriptorProto
# (name, number, type) in schema order; the numbers are the wire contract.
_STAT_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("pod_name", 1, _FDP.TYPE_STRING),
    ("average_concurrent_requests", 2, _FDP.TYPE_DOUBLE),
    ("average_proxied_concurrent_requests", 3, _FDP.TYPE_DOUBLE),
    ("request_count", 4, _FDP.TYPE_DOUBLE),
    ("proxied_request_count", 5, _FDP.TYPE_DOUBLE),
    ("process_uptime", 6, _FDP.TYPE_DOUBLE),
    ("timestamp", 7, _FDP.TYPE_INT64),
)
_STAT_NAMES = tuple(name for name, _, _ in _STAT_FIELDS)


def _build_classes() -> tuple[Any, Any, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="sluice/metrics/stat.proto", package="metrics", syntax="proto3"
    )

    def add_field(
        msg: descriptor_pb2.DescriptorProto,
        name: str,
        number: int,
        ftype: int,
        label: int = _FDP.LABEL_OPTIONAL,
        type_name: str = "",
    ) -> None:
        field = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            field.type_name = type_name

    stat = fdp.message_type.add(name="Stat")
    for name, number, ftype in _STAT_FIELDS:
        add_field(stat, name, number, ftype)
    wire = fdp.message_type.add(name="WireStatMessage")
    add_field(wire, "namespace", 1, _FDP.TYPE_STRING)
    add_field(wire, "name", 2, _FDP.TYPE_STRING)
    add_field(wire, "stat", 3, _FDP.TYPE_MESSAGE, type_name=".metrics.Stat")
    wires = fdp.message_type.add(name="WireStatMessages")
    add_field(
        wires,
        "messages",
        1,
        _FDP.TYPE_MESSAGE,
        label=_FDP.LABEL_REPEATED,
        type_name=".metrics.WireStatMessage",
    )

    pool = descriptor_pool.DescriptorPool()
    # AddSerializedFile then FindFileByName works on every protobuf backend (upb, C++,
    # pure Python); what ``Add`` returns differs between them.
    pool.AddSerializedFile(fdp.SerializeToString())
    by_name = pool.FindFileByName(fdp.name).message_types_by_name
    return (
        message_factory.GetMessageClass(by_name["Stat"]),
        message_factory.GetMessageClass(by_name["WireStatMessage"]),
        message_factory.GetMessageClass(by_name["WireStatMessages"]),
    )


_StatPB, _WireStatMessagePB, _WireStatMessagesPB = _build_classes()


def _fill(pb: Any, stat: Stat) -> None:
    for name in _STAT_NAMES:
        setattr(pb, name, getattr(stat, name))


def _from_pb(pb: Any) -> Stat:
    return Stat(**{name: getattr(pb, name) for name in _STAT_NAMES})


def encode_stat_pb(stat: Stat) -> bytes:
    """Serialize one ``metrics.Stat`` with the protobuf library (reference for ``encode_stat``)."""
    pb = _StatPB()
    _fill(pb, stat)
    out: bytes = pb.SerializeToString()
    return out


def decode_stat(data: bytes) -> Stat:
    """Parse one ``metrics.Stat``; raises ``ValueError`` on malformed input."""
    pb = _StatPB()
    try:
        pb.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError; translated at the boundary
        raise ValueError(f"malformed metrics.Stat: {exc}") from exc
    return _from_pb(pb)


def encode_wire_stats(items: list[tuple[str, str, Stat]]) -> bytes:
    """Serialize a ``metrics.WireStatMessages`` from (namespace, name, stat) triples."""
    msgs = _WireStatMessagesPB()
    for namespace, name, stat in items:
        msg = msgs.messages.add()
        msg.namespace = namespace
        msg.name = name
        # Presence matters for a message field: set it even when every field is default.
        msg.stat.SetInParent()
        _fill(msg.stat, stat)
    out: bytes = msgs.SerializeToString()
    return out


def decode_wire_stats(data: bytes) -> list[tuple[str, str, Stat]]:
    """Parse a ``metrics.WireStatMessages`` into (namespace, name, stat) triples.

    A message without a ``stat`` yields a default ``Stat``. Raises ``ValueError`` on
    malformed input.
    """
    msgs = _WireStatMessagesPB()
    try:
        msgs.ParseFromString(data)
    except Exception as exc:
        raise ValueError(f"malformed metrics.WireStatMessages: {exc}") from exc
    return [(m.namespace, m.name, _from_pb(m.stat)) for m in msgs.messages]
