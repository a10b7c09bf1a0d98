"""Which fields a Knative ``Service`` may have, and what Sluice does with each.

Knative's webhook and ``kubectl --validate=strict`` refuse unknown fields and wrong types; a
typo such as ``trafic`` must never be dropped, since the default it leaves (100 % to the latest
revision) is a silent change of behaviour. ``check`` walks a decoded document against ``SERVICE``
and reports three things, each with its field path:

* errors: unknown fields (with the closest known name), wrong types, and fields Knative allows
  but Sluice refuses because running without them would be wrong (``volumes``, init containers);
* warnings: fields Knative allows that Sluice ignores because one machine has no use for them
  (scheduling, service accounts, liveness probes, ...), named so that nothing is dropped
  silently;
* nothing, for fields Sluice honours and server-set metadata (so ``get -o yaml`` output applies).

The tree is Sluice's own knowledge of the v1 API (``serving.knative.dev/v1`` Service, whose
``spec.template`` is Configuration's and ``spec.traffic`` Route's); a unit test compares it with
Knative's CRD schemas so that every field Knative allows is named here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HONOURED, IGNORED, REFUSED, SERVER = "honoured", "ignored", "refused", "server"


@dataclass(frozen=True, slots=True)
class Field:
    """One node of the schema: its JSON type and what Sluice does with it.

    ``kind`` is object|list|map|string|integer|boolean|quantity|any; ``fields`` are an object's
    members, ``item`` a list's or map's element. ``why`` explains an ignored or refused field.
    """

    kind: str
    fields: Mapping[str, Field] = field(default_factory=dict)
    item: Field | None = None
    support: str = HONOURED
    why: str = ""


@dataclass(frozen=True, slots=True)
class Issue:
    message: str
    path: str


S, INT, B = Field("string"), Field("integer"), Field("boolean")
ANY, QUANTITY = Field("any"), Field("quantity")
STRING_MAP = Field("map", item=S)


def obj(**fields: Field) -> Field:
    return Field("object", fields)


def listof(item: Field) -> Field:
    return Field("list", item=item)


def ignored(f: Field, why: str) -> Field:
    return Field(f.kind, f.fields, f.item, IGNORED, why)


def refused(f: Field, why: str) -> Field:
    return Field(f.kind, f.fields, f.item, REFUSED, why)


def _server(f: Field) -> Field:
    return Field(f.kind, f.fields, f.item, SERVER)


NO_CLUSTER = "sluice runs no scheduler or cluster"
OBJECT_META = obj(
    name=S,
    namespace=S,
    labels=STRING_MAP,
    annotations=STRING_MAP,
    generateName=refused(S, "sluice needs metadata.name"),
    # Set by an API server; accepted so that `sluice get -o yaml` output can be applied back.
    uid=_server(S),
    resourceVersion=_server(S),
    generation=_server(INT),
    creationTimestamp=_server(ANY),
    deletionTimestamp=_server(ANY),
    deletionGracePeriodSeconds=_server(INT),
    selfLink=_server(S),
    finalizers=_server(listof(S)),
    ownerReferences=_server(listof(ANY)),
    managedFields=_server(listof(ANY)),
)
_PORT = Field("intorstring")
_HTTP_GET = obj(
    path=S,
    port=_PORT,
    host=ignored(S, "the probe always targets the container on loopback"),
    scheme=ignored(S, "sluice probes over HTTP"),
    httpHeaders=listof(obj(name=S, value=S)),
)
_TCP = obj(port=_PORT, host=ignored(S, "the probe always targets the container on loopback"))


def _probe(support: str, why: str = "") -> Field:
    body = obj(
        httpGet=_HTTP_GET,
        tcpSocket=_TCP,
        exec=obj(command=listof(S)),
        grpc=refused(obj(port=INT, service=S), "sluice probes with httpGet, tcpSocket or exec"),
        initialDelaySeconds=ignored(INT, "sluice probes from the start"),
        periodSeconds=INT,
        timeoutSeconds=INT,
        successThreshold=INT,
        failureThreshold=INT,
    )
    return Field("object", body.fields, None, support, why)


_KEY_REF = obj(name=S, key=S, optional=B)
CONTAINER = obj(
    name=S,
    image=S,
    command=listof(S),
    args=listof(S),
    workingDir=ignored(S, "local processes run in the manifest's directory"),
    ports=listof(obj(containerPort=INT, name=S, protocol=S)),
    env=listof(
        obj(
            name=S,
            value=S,
            valueFrom=refused(
                obj(
                    configMapKeyRef=_KEY_REF,
                    secretKeyRef=_KEY_REF,
                    fieldRef=ANY,
                    resourceFieldRef=ANY,
                ),
                "use value or envFrom",
            ),
        )
    ),
    envFrom=listof(
        obj(prefix=S, configMapRef=obj(name=S, optional=B), secretRef=obj(name=S, optional=B))
    ),
    resources=obj(
        limits=Field("map", item=QUANTITY),
        requests=ignored(Field("map", item=QUANTITY), NO_CLUSTER),
    ),
    readinessProbe=_probe(HONOURED),
    livenessProbe=_probe(IGNORED, "sluice restarts a pod only when its process exits"),
    startupProbe=_probe(IGNORED, "the readiness probe gates traffic"),
    imagePullPolicy=S,
    securityContext=ignored(
        obj(
            allowPrivilegeEscalation=B,
            capabilities=obj(add=listof(S), drop=listof(S)),
            privileged=B,
            readOnlyRootFilesystem=B,
            runAsGroup=INT,
            runAsNonRoot=B,
            runAsUser=INT,
            seccompProfile=obj(localhostProfile=S, type=S),
        ),
        "containers run with the runtime's defaults",
    ),
    terminationMessagePath=ignored(S, "sluice shows the last log line instead"),
    terminationMessagePolicy=ignored(S, "sluice shows the last log line instead"),
    volumeMounts=refused(
        listof(
            obj(mountPath=S, mountPropagation=S, name=S, readOnly=B, subPath=S),
        ),
        "sluice has no volumes",
    ),
)
POD_SPEC = obj(
    containerConcurrency=INT,
    timeoutSeconds=INT,
    responseStartTimeoutSeconds=INT,
    idleTimeoutSeconds=INT,
    containers=listof(CONTAINER),
    volumes=refused(listof(ANY), "sluice has no volumes"),
    initContainers=refused(listof(ANY), "sluice runs one container per pod"),
    serviceAccountName=ignored(S, "sluice has no service accounts"),
    automountServiceAccountToken=ignored(B, "sluice has no service accounts"),
    imagePullSecrets=ignored(listof(obj(name=S)), "the runtime's own login is used"),
    enableServiceLinks=ignored(B, NO_CLUSTER),
    affinity=ignored(ANY, NO_CLUSTER),
    nodeSelector=ignored(STRING_MAP, NO_CLUSTER),
    tolerations=ignored(listof(ANY), NO_CLUSTER),
    topologySpreadConstraints=ignored(listof(ANY), NO_CLUSTER),
    priorityClassName=ignored(S, NO_CLUSTER),
    runtimeClassName=ignored(S, NO_CLUSTER),
    schedulerName=ignored(S, NO_CLUSTER),
    dnsPolicy=ignored(S, NO_CLUSTER),
    dnsConfig=ignored(ANY, NO_CLUSTER),
    hostAliases=ignored(listof(ANY), NO_CLUSTER),
    hostIPC=ignored(B, NO_CLUSTER),
    hostNetwork=ignored(B, NO_CLUSTER),
    hostPID=ignored(B, NO_CLUSTER),
    shareProcessNamespace=ignored(B, "sluice runs one container per pod"),
    securityContext=ignored(ANY, "containers run with the runtime's defaults"),
)
TEMPLATE = obj(
    metadata=obj(
        name=S,
        namespace=_server(S),
        annotations=STRING_MAP,
        labels=ignored(STRING_MAP, "sluice does not label revisions from the template"),
        finalizers=_server(listof(S)),
    ),
    spec=POD_SPEC,
)
TRAFFIC = obj(
    revisionName=S,
    latestRevision=B,
    percent=INT,
    tag=S,
    configurationName=S,
    url=S,
)
#: ConfigMaps and Secrets (``v1``), applied for ``envFrom``.
CONFIG_MAP = obj(
    apiVersion=S,
    kind=S,
    metadata=OBJECT_META,
    data=STRING_MAP,
    binaryData=ignored(STRING_MAP, "binary values cannot be environment variables"),
    immutable=B,
)
SECRET = obj(
    apiVersion=S,
    kind=S,
    metadata=OBJECT_META,
    data=STRING_MAP,
    stringData=STRING_MAP,
    type=S,
    immutable=B,
)
SERVICE = obj(
    apiVersion=S,
    kind=S,
    metadata=OBJECT_META,
    spec=obj(template=TEMPLATE, traffic=listof(TRAFFIC)),
    status=_server(ANY),
)
_EXPECTED = {
    "object": "an object",
    "map": "an object",
    "list": "a list",
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "quantity": "a quantity",
    "intorstring": "a port number or name",
}


def check(doc: Any, schema: Field = SERVICE) -> tuple[list[Issue], list[Issue]]:
    """``(errors, warnings)`` for ``doc`` against ``schema``, each with its field path."""
    errors: list[Issue] = []
    warnings: list[Issue] = []
    _walk(doc, schema, "", errors, warnings)
    return errors, warnings


def _walk(value: Any, f: Field, path: str, errors: list[Issue], warnings: list[Issue]) -> None:
    if value is None or f.kind == "any":
        return
    if f.support == REFUSED:
        errors.append(Issue(f"not supported by sluice ({f.why})", path))
        return
    if f.support == IGNORED:
        warnings.append(Issue(f"ignored by sluice ({f.why})", path))
    if not _type_ok(value, f.kind):
        errors.append(Issue(f"invalid value: {value!r} (expected {_EXPECTED[f.kind]})", path))
        return
    if f.kind == "object":
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else str(key)
            known = f.fields.get(key) if isinstance(key, str) else None
            if known is None:
                errors.append(Issue(_unknown(key, f.fields), sub_path))
            else:
                _walk(sub, known, sub_path, errors, warnings)
    elif f.kind == "list" and f.item is not None:
        for i, sub in enumerate(value):
            _walk(sub, f.item, f"{path}[{i}]", errors, warnings)
    elif f.kind == "map" and f.item is not None:
        for key, sub in value.items():
            _walk(sub, f.item, f"{path}[{key}]", errors, warnings)


def _type_ok(value: Any, kind: str) -> bool:
    if kind in ("object", "map"):
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    # quantity ("500m", 1, 0.5) and intorstring (8080, "http1")
    allowed = (str, int, float) if kind == "quantity" else (str, int)
    return isinstance(value, allowed) and not isinstance(value, bool)


def _unknown(key: object, known: Mapping[str, Field]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.75)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f'unknown field "{key}"{hint}'
