"""A tiny synchronous Kubernetes REST client for the kube tier's fixtures and tests.

It speaks JSON over HTTPS with one identity (a client certificate or a bearer token), knows
the URL of the handful of kinds the tier touches (:data:`RESOURCES`), and offers get / list /
create / update / patch / server-side apply / delete / watch. It is blocking on purpose:
the fake node runs it in its own threads, and tests call it from async code only for quick
one-off reads (wrap in ``asyncio.to_thread`` for anything that waits).

Errors are :class:`ApiError` carrying the HTTP status and the server's one-line message.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

__all__ = ["RESOURCES", "ApiError", "KubeApi", "Obj"]

Obj = dict[str, Any]

# kind -> (API path prefix, plural, namespaced)
RESOURCES: Mapping[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Pod": ("/api/v1", "pods", True),
    "Service": ("/api/v1", "services", True),
    "Endpoints": ("/api/v1", "endpoints", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "KService": ("/apis/serving.knative.dev/v1", "services", True),
    "Configuration": ("/apis/serving.knative.dev/v1", "configurations", True),
    "Revision": ("/apis/serving.knative.dev/v1", "revisions", True),
    "Route": ("/apis/serving.knative.dev/v1", "routes", True),
    "PodAutoscaler": ("/apis/autoscaling.internal.knative.dev/v1alpha1", "podautoscalers", True),
    "Metric": ("/apis/autoscaling.internal.knative.dev/v1alpha1", "metrics", True),
    "ServerlessService": (
        "/apis/networking.internal.knative.dev/v1alpha1",
        "serverlessservices",
        True,
    ),
    "Ingress": ("/apis/networking.internal.knative.dev/v1alpha1", "ingresses", True),
}

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


class ApiError(Exception):
    """A non-2xx answer: ``status`` is the HTTP status, the message the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def kind_of(obj: Mapping[str, Any]) -> str:
    """The :data:`RESOURCES` key for a manifest (Knative's Service is ``KService``)."""
    kind = str(obj["kind"])
    if kind == "Service" and str(obj.get("apiVersion", "")).startswith("serving.knative.dev"):
        return "KService"
    return kind


@dataclass(frozen=True, slots=True)
class KubeApi:
    """One identity's view of the API server at ``server`` (``https://127.0.0.1:<port>``)."""

    server: str
    ca_cert: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None
    timeout: float = 10.0

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if self.client_cert is not None:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def path(self, kind: str, namespace: str | None = None, name: str | None = None) -> str:
        """The collection path, or the object path when ``name`` is given."""
        prefix, plural, namespaced = RESOURCES[kind]
        if namespaced and namespace is None and name is not None:
            raise ValueError(f"{kind} {name}: namespace is required")
        base = (
            f"{prefix}/namespaces/{namespace}/{plural}"
            if namespaced and namespace
            else f"{prefix}/{plural}"
        )
        return f"{base}/{name}" if name else base

    def _open(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HTTPResponse:
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            resp: HTTPResponse = urllib.request.urlopen(
                req, context=self._context(), timeout=timeout or self.timeout
            )
        except urllib.error.HTTPError as err:
            raw = err.read().decode(errors="replace")
            try:
                message = str(json.loads(raw).get("message", raw))
            except ValueError:
                message = raw.strip()
            raise ApiError(err.code, f"{method} {path}: {message}") from None
        return resp

    def request(self, method: str, path: str, body: object = None, **kw: Any) -> Obj:
        """One request; the decoded JSON answer."""
        with self._open(method, path, body, **kw) as resp:
            answer: Obj = json.loads(resp.read() or b"{}")
            return answer

    def raw(self, path: str) -> bytes:
        """GET ``path`` (``/readyz``, ``/version``, ...): the body as bytes."""
        with self._open("GET", path) as resp:
            return resp.read()

    def get(self, kind: str, namespace: str | None, name: str) -> Obj:
        return self.request("GET", self.path(kind, namespace, name))

    def get_or_none(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.get(kind, namespace, name)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> Obj:
        """The List object (``items`` and ``metadata.resourceVersion``)."""
        query = {"labelSelector": selector} if selector else None
        return self.request("GET", self.path(kind, namespace), query=query)

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return self.request("POST", self.path(kind_of(obj), meta.get("namespace")), obj)

    def update(self, obj: Obj, subresource: str = "") -> Obj:
        meta = obj["metadata"]
        path = self.path(kind_of(obj), meta.get("namespace"), meta["name"])
        return self.request("PUT", path + (f"/{subresource}" if subresource else ""), obj)

    def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: object,
        patch_type: str = "merge",
        subresource: str = "",
    ) -> Obj:
        path = self.path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return self.request("PATCH", path, patch, content_type=PATCH_TYPES[patch_type])

    def apply(self, obj: Obj, manager: str = "sluice-kube-tier", subresource: str = "") -> Obj:
        """Server-side apply (forced): create or converge ``obj``'s fields owned by ``manager``."""
        meta = obj["metadata"]
        path = self.path(kind_of(obj), meta.get("namespace"), meta["name"])
        return self.request(
            "PATCH",
            path + (f"/{subresource}" if subresource else ""),
            obj,
            content_type="application/apply-patch+yaml",  # JSON is valid YAML
            query={"fieldManager": manager, "force": "true"},
        )

    def delete(self, kind: str, namespace: str | None, name: str, grace: int | None = None) -> None:
        body = None if grace is None else {"gracePeriodSeconds": grace}
        try:
            self.request("DELETE", self.path(kind, namespace, name), body)
        except ApiError as err:
            if err.status != 404:
                raise

    def watch(
        self,
        kind: str,
        namespace: str | None = None,
        selector: str | None = None,
        resource_version: str = "",
        timeout_seconds: int = 300,
    ) -> Iterator[Obj]:
        """Watch events (``{"type", "object"}``) until the server ends the watch.

        ``resource_version`` "" starts with synthetic ADDED events for what exists. A 410
        (resource version too old) arrives as an ``ERROR`` event the caller must handle by
        listing again.
        """
        query = {"watch": "1", "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "1"}
        if selector:
            query["labelSelector"] = selector
        if resource_version:
            query["resourceVersion"] = resource_version
        with self._open(
            "GET", self.path(kind, namespace), query=query, timeout=timeout_seconds + 10
        ) as resp:
            for line in resp:
                if line.strip():
                    event: Obj = json.loads(line)
                    yield event

    def can_i(self, verb: str, resource: str, namespace: str = "", group: str = "") -> bool:
        """SelfSubjectAccessReview: may this identity ``verb`` ``resource``?"""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "namespace": namespace,
                }
            },
        }
        answer = self.request(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review
        )
        return bool(answer.get("status", {}).get("allowed", False))
