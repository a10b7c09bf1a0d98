"""A small async Kubernetes API client on aiohttp: GET, paginated LIST and streaming WATCH.

Why not kubernetes-asyncio: it costs several times the import memory and decodes every watch
event into generated model objects (JSON parsed, re-serialised, parsed again) before our
projection reads five fields of it; ``docs/kubernetes-client.md`` has the numbers
(``python -m bench.kube_client``). The activator needs three verbs on four resources, so a thin
layer is smaller than the adapter to a big one.

Contracts:

* Nothing is read whole: a watch is split into lines as bytes arrive, each line bounded by
  ``max_line`` (8 MiB by default; a single Kubernetes object is capped near 1.5 MiB by etcd),
  and a LIST page by ``max_body``; LIST asks for pages of ``page_size`` items.
* Errors are a small taxonomy, each one line: ``ApiError`` (the server answered with a
  ``Status``; a 403 reads ``forbidden: cannot list endpoints in the cluster scope (as
  system:serviceaccount:knative-serving:activator)``), its subclass ``Expired`` for 410 Gone
  (the resourceVersion is too old: relist), and ``TransportError`` (no answer at all).
* The bearer token is asked of ``TokenSource`` on every request, so a rotated token file is
  picked up without a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import aiohttp

from activator.kube.auth import TokenSource, ssl_context
from activator.kube.config import KubeConfig

__all__ = [
    "CONFIGMAPS",
    "ENDPOINTS",
    "REVISIONS",
    "SERVICES",
    "ApiError",
    "Expired",
    "KubeClient",
    "KubeError",
    "Resource",
    "TransportError",
    "WatchStream",
    "parse_event",
]

log = logging.getLogger("sluice.activator.kube")

#: Bound on one watch event's JSON line (etcd caps an object near 1.5 MiB).
DEFAULT_MAX_LINE: Final = 8 << 20
#: Bound on one LIST page's body.
DEFAULT_MAX_BODY: Final = 64 << 20
#: Items per LIST page (client-go's reflector pages by 500 too).
DEFAULT_PAGE_SIZE: Final = 500
#: Timeout of a plain request (GET, one LIST page).
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
#: How much longer than its ``timeoutSeconds`` a watch may stay silent before we give up on
#: the connection (the server should have closed it; a half-dead TCP path would not).
WATCH_SLACK_SECONDS: Final = 30.0
_USER_IN_MESSAGE = re.compile(r'User "([^"]+)"')


@dataclass(frozen=True, slots=True)
class Resource:
    """A collection: ``group`` is ``""`` for the core API; ``namespace`` None is cluster-wide."""

    group: str
    version: str
    plural: str
    namespace: str | None = None

    def path(self) -> str:
        """The collection's URL path, e.g. ``/apis/serving.knative.dev/v1/revisions``."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespace is not None:
            base += f"/namespaces/{self.namespace}"
        return f"{base}/{self.plural}"

    def in_namespace(self, namespace: str | None) -> Resource:
        return Resource(self.group, self.version, self.plural, namespace)

    def describe(self) -> str:
        """``endpoints in the cluster scope``, ``revisions.serving.knative.dev in ...``."""
        what = f"{self.plural}.{self.group}" if self.group else self.plural
        if self.namespace is None:
            return f"{what} in the cluster scope"
        return f"{what} in the namespace {self.namespace}"


REVISIONS: Final = Resource("serving.knative.dev", "v1", "revisions")
ENDPOINTS: Final = Resource("", "v1", "endpoints")
SERVICES: Final = Resource("", "v1", "services")
CONFIGMAPS: Final = Resource("", "v1", "configmaps")


class KubeError(Exception):
    """Any failure talking to the API server; ``str()`` is one line."""


class TransportError(KubeError):
    """No usable answer: connection refused or reset, TLS failure, timeout, a broken stream."""


class ApiError(KubeError):
    """The API server answered with an error ``Status``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        verb: str,
        resource: str,
        identity: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = " ".join(message.split())
        self.verb = verb
        self.resource = resource
        self.identity = identity
        super().__init__(self._line())

    def _line(self) -> str:
        if self.status == 403:
            who = f" (as {self.identity})" if self.identity else ""
            return f"forbidden: cannot {self.verb} {self.resource}{who}"
        detail = f": {self.message}" if self.message else ""
        return f"{self.verb} {self.resource}: {self.status} {self.reason}{detail}"


class Expired(ApiError):
    """410 Gone: the resourceVersion asked for has been compacted away; list again."""


def _status_error(
    status: int, body: object, verb: str, resource: str, identity: str | None
) -> ApiError:
    reason, message = "", ""
    if isinstance(body, dict):
        status = int(body.get("code") or status)
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
    found = _USER_IN_MESSAGE.search(message)
    if found:
        identity = found.group(1)
    cls = Expired if status == 410 else ApiError
    return cls(status, reason or _REASONS.get(status, "Error"), message, verb, resource, identity)


_REASONS: Final = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 410: "Expired"}


class KubeClient:
    """GET / LIST / WATCH against one API server. Not thread-safe; one per event loop.

    ``session`` may be supplied (then it is not closed here); otherwise one is created on first
    use with the TLS context of ``config``.
    """

    def __init__(
        self,
        config: KubeConfig,
        session: aiohttp.ClientSession | None = None,
        *,
        tokens: TokenSource | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_line: int = DEFAULT_MAX_LINE,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.config = config
        self._session = session
        self._own_session = session is None
        self._tokens = tokens or TokenSource(config)
        self._ssl = ssl_context(config)
        self._timeout = request_timeout
        self.page_size = page_size
        self.max_line = max_line
        self.max_body = max_body

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def identity(self) -> str | None:
        """Who we are, if known (token ``sub`` claim or configuration)."""
        return self._tokens.identity() or self.config.identity

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "sluice-activator"}
        token = self._tokens.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _send(
        self,
        verb: str,
        path: str,
        params: dict[str, str],
        resource: str,
        timeout: aiohttp.ClientTimeout,
        *,
        method: str = "GET",
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the 200 response (caller releases); raise otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self.config.server + path
        headers = self._headers()
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            resp = await self._session.request(
                method,
                url,
                data=body,
                params=params,
                headers=headers,
                timeout=timeout,
                ssl=self._ssl if self._ssl is not None else True,
                server_hostname=self.config.tls_server_name,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransportError(f"cannot reach the Kubernetes API at {url}: {_why(exc)}") from exc
        if resp.status == 200:
            return resp
        try:
            raw = await resp.content.read(64 << 10)
            status: object = json.loads(raw) if raw else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            status = None
        finally:
            resp.release()
        raise _status_error(resp.status, status, verb, resource, self.identity)

    async def _get_json(self, verb: str, path: str, params: dict[str, str], resource: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        resp = await self._send(verb, path, params, resource, timeout)
        return await self._json_body(resp, verb, resource)

    async def _json_body(self, resp: aiohttp.ClientResponse, verb: str, resource: str) -> Any:
        """The whole answer (bounded by ``max_body``) decoded as JSON; releases ``resp``."""
        try:
            body = bytearray()
            async for chunk in resp.content.iter_any():
                body += chunk
                if len(body) > self.max_body:
                    raise TransportError(f"{verb} {resource}: answer exceeds {self.max_body} bytes")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransportError(f"{verb} {resource}: answer cut short: {_why(exc)}") from exc
        finally:
            resp.release()
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TransportError(f"{verb} {resource}: answer is not JSON: {exc}") from exc

    async def patch_status(
        self, resource: Resource, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge-patch the ``status`` subresource of one object (ingress mode's only
        write); returns the object as the server now has it."""
        path = f"{resource.path()}/{name}/status"
        what = f"{resource.describe()} {name}/status"
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        resp = await self._send(
            "patch",
            path,
            {},
            what,
            timeout,
            method="PATCH",
            body=json.dumps(patch).encode(),
            content_type="application/merge-patch+json",
        )
        obj = await self._json_body(resp, "patch", what)
        if not isinstance(obj, dict):
            raise TransportError(f"patch {what}: expected a JSON object")
        return obj

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` (e.g. ``/version``) and return the decoded JSON object."""
        body = await self._get_json("get", path, params or {}, path)
        if not isinstance(body, dict):
            raise TransportError(f"get {path}: expected a JSON object")
        return body

    async def wait_for_version(
        self, timeout: float = 60.0, interval: float = 1.0
    ) -> dict[str, Any]:
        """GET ``/version`` until it answers (Knative's start-up check); return the answer.

        Logs one line naming the URL at the first failure, none for the retries; raises a
        one-line ``KubeError`` if no answer came within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        url = self.config.server + "/version"
        last: KubeError | None = None
        while True:
            try:
                return await self.get("/version")
            except KubeError as exc:
                if last is None:
                    log.warning("Kubernetes API at %s not answering yet (%s); retrying", url, exc)
                last = exc
            if loop.time() + interval > deadline:
                raise KubeError(f"Kubernetes API at {url} did not answer in {timeout:g}s: {last}")
            await asyncio.sleep(interval)

    async def list(
        self, resource: Resource, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects matching ``label_selector``, paged; returns ``(items, resourceVersion)``.

        If the continue token expires between pages (410), the list restarts unpaged, as
        client-go's pager does.
        """
        what = resource.describe()
        items: list[dict[str, Any]] = []
        cont: str | None = None
        limit = self.page_size
        while True:
            params: dict[str, str] = {}
            if limit:
                params["limit"] = str(limit)
            if label_selector:
                params["labelSelector"] = label_selector
            if cont:
                params["continue"] = cont
            try:
                page = await self._get_json("list", resource.path(), params, what)
            except Expired:
                if cont is None:
                    raise
                items, cont, limit = [], None, 0
                continue
            if not isinstance(page, dict) or not isinstance(page.get("items") or [], list):
                raise TransportError(f"list {what}: answer is not a list")
            items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def watch(
        self,
        resource: Resource,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> WatchStream:
        """Watch from ``resource_version`` with bookmarks; iterate ``(type, object)`` pairs.

        Types are ``ADDED``, ``MODIFIED``, ``DELETED`` and ``BOOKMARK``; an ``ERROR`` event is
        raised as ``ApiError`` (``Expired`` for 410). Iteration ends when the server closes
        the stream (normally after ``timeout_seconds``).
        """
        params = {"watch": "true", "allowWatchBookmarks": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        return WatchStream(self, resource, params, timeout_seconds)


class WatchStream:
    """One watch request. ``await open()`` (optional) sends it; iterating reads events.

    Use as ``async with client.watch(...) as events: async for type_, obj in events``.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        params: dict[str, str],
        timeout_seconds: int | None,
    ) -> None:
        self._client = client
        self._resource = resource
        self._params = params
        read = None if timeout_seconds is None else timeout_seconds + WATCH_SLACK_SECONDS
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=read)
        self._resp: aiohttp.ClientResponse | None = None
        self._buf = bytearray()
        self._eof = False

    async def open(self) -> None:
        """Send the request; raise ``ApiError``/``TransportError`` unless it answers 200."""
        if self._resp is None:
            what = self._resource.describe()
            self._resp = await self._client._send(
                "watch", self._resource.path(), self._params, what, self._timeout
            )

    async def aclose(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._eof = True

    async def __aenter__(self) -> WatchStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        while True:
            line = await self._next_line()
            if line is None:
                raise StopAsyncIteration
            if line.strip():
                return self._event(line)

    async def _next_line(self) -> bytes | None:
        await self.open()
        assert self._resp is not None
        limit = self._client.max_line
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if len(self._buf) > limit:
                raise TransportError(f"watch {self._resource.describe()}: event over {limit} bytes")
            if self._eof:
                if self._buf:
                    line, self._buf = bytes(self._buf), bytearray()
                    return line
                return None
            try:
                chunk = await self._resp.content.readany()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                what = self._resource.describe()
                raise TransportError(f"watch {what}: stream broken: {_why(exc)}") from exc
            if chunk:
                self._buf += chunk
            else:
                self._eof = True

    def _event(self, line: bytes) -> tuple[str, dict[str, Any]]:
        return parse_event(line, self._resource.describe(), self._client.identity)


def parse_event(
    line: bytes, resource: str = "", identity: str | None = None
) -> tuple[str, dict[str, Any]]:
    """One watch line to ``(type, object)``; an ``ERROR`` event raises its ``ApiError``."""
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise TransportError(f"watch {resource}: event is not JSON: {exc}") from exc
    kind = event.get("type") if isinstance(event, dict) else None
    obj = event.get("object") if isinstance(event, dict) else None
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise TransportError(f"watch {resource}: event without type or object")
    if kind == "ERROR":
        raise _status_error(500, obj, "watch", resource, identity)
    return kind, obj


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
