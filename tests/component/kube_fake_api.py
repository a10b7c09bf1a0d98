"""An in-process fake Kubernetes API server (aiohttp.web on 127.0.0.1) for the kube tests.

It keeps objects per collection with a global resourceVersion counter and an event history,
and serves what the activator's client uses: ``GET /version``, paged LIST (``limit`` +
``continue``), and WATCH (``watch=true``) as JSON lines replayed from the history after the
requested version, then live. Test knobs:

* ``compact()`` (also usable as ``after_list_page``): versions up to now become too old:
  a watch from them gets a 410 ERROR event, a continue token from them a 410 Status;
* ``forbid(verb, plural)``: answer 403 with the API server's own message shape;
* ``close_watches_after``: end every watch after that many events (as a server timeout would);
  ``close_watches()`` ends the open ones now;
* ``bookmark()``: send a BOOKMARK at the current version to every open watch;
* ``stop()`` / ``start()``: the server goes away and comes back on the same port.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
_PATH = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([^/]+)$")
_OBJECT = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)/([^/]+)$")
IDENTITY = "system:serviceaccount:knative-serving:activator"


@dataclass
class _Collection:
    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    history: list[tuple[int, str, Obj]] = field(default_factory=list)


def _matches(obj: Obj, selector: str | None, namespace: str | None) -> bool:
    meta = obj.get("metadata") or {}
    if namespace is not None and meta.get("namespace") != namespace:
        return False
    labels = meta.get("labels") or {}
    for term in (selector or "").split(","):
        if not term:
            continue
        if "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k) != v:
                return False
        elif term not in labels:
            return False
    return True


class FakeApiServer:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.rv = 100
        self.compacted = 0
        self.close_watches_after: int | None = None
        self.max_watch_seconds = 30.0
        #: Called after each LIST page is computed (a test's hook, e.g. to compact).
        self.after_list_page: Callable[[], None] | None = None
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.tokens_seen: list[str] = []
        self._forbidden: set[tuple[str, str]] = set()
        self._cols: dict[tuple[str, str], _Collection] = {}
        self._changed = asyncio.Condition()
        self._closing = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application()
        app.router.add_get("/version", self._version)
        app.router.add_get("/{tail:.*}", self._collection)
        app.router.add_patch("/{tail:.*}", self._patch_status)
        self._app = app

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- mutations ---------------------------------------------------------------------------

    def _col(self, prefix: str, plural: str) -> _Collection:
        return self._cols.setdefault((prefix, plural), _Collection())

    async def _record(self, prefix: str, plural: str, kind: str, obj: Obj) -> Obj:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        col = self._col(prefix, plural)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if kind == "DELETED":
            col.objects.pop(key, None)
        else:
            col.objects[key] = obj
        col.history.append((self.rv, kind, obj))
        async with self._changed:
            self._changed.notify_all()
        return obj

    async def put(self, prefix: str, plural: str, obj: Obj) -> Obj:
        """Create or replace ``obj`` (ADDED or MODIFIED); returns it with its new version."""
        col = self._col(prefix, plural)
        meta = obj["metadata"]
        exists = (meta.get("namespace", ""), meta["name"]) in col.objects
        return await self._record(prefix, plural, "MODIFIED" if exists else "ADDED", obj)

    async def delete(self, prefix: str, plural: str, namespace: str, name: str) -> None:
        obj = self._col(prefix, plural).objects[(namespace, name)]
        await self._record(prefix, plural, "DELETED", obj)

    def put_quietly(self, prefix: str, plural: str, obj: Obj) -> None:
        """Change state with no watch event (as if it happened during a compacted gap)."""
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        self._col(prefix, plural).objects[(meta.get("namespace", ""), meta["name"])] = obj

    def delete_quietly(self, prefix: str, plural: str, namespace: str, name: str) -> None:
        self.rv += 1
        del self._col(prefix, plural).objects[(namespace, name)]

    def object(self, prefix: str, plural: str, namespace: str, name: str) -> Obj | None:
        """The stored object, as the server has it now (None if absent)."""
        return self._col(prefix, plural).objects.get((namespace, name))

    def compact(self) -> None:
        self.compacted = self.rv

    def forbid(self, verb: str, plural: str) -> None:
        self._forbidden.add((verb, plural))

    async def bookmark(self) -> None:
        self.rv += 1
        for col in self._cols.values():
            col.history.append(
                (self.rv, "BOOKMARK", {"metadata": {"resourceVersion": str(self.rv)}})
            )
        async with self._changed:
            self._changed.notify_all()

    async def close_watches(self) -> None:
        self._closing += 1
        async with self._changed:
            self._changed.notify_all()

    # -- handlers ----------------------------------------------------------------------------

    def _check_auth(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        self.tokens_seen.append(auth.removeprefix("Bearer "))
        if self.token is not None and auth != f"Bearer {self.token}":
            raise _status(401, "Unauthorized", "Unauthorized")

    async def _version(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        self._check_auth(request)
        return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"})

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append((request.path, query))
        self._check_auth(request)
        m = _PATH.match(request.path)
        if m is None:
            one = _OBJECT.match(request.path)
            if one is None:
                raise _status(404, "NotFound", f"the server could not find {request.path}")
            prefix, namespace, plural, name = one.groups()
            obj = self._col(prefix, plural).objects.get((namespace, name))
            if obj is None:
                raise _status(404, "NotFound", f'{plural} "{name}" not found')
            return web.json_response(obj)
        prefix, namespace, plural = m.group(1), m.group(2), m.group(3)
        watching = query.get("watch") == "true"
        verb = "watch" if watching else "list"
        if (verb, plural) in self._forbidden:
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            group = prefix.split("/")[1] if prefix.startswith("apis/") else ""
            raise _status(
                403,
                "Forbidden",
                f'{plural} is forbidden: User "{IDENTITY}" cannot {verb} resource "{plural}" '
                f'in API group "{group}" {scope}',
            )
        col = self._col(prefix, plural)
        selector = query.get("labelSelector")
        if watching:
            return await self._watch(request, col, selector, namespace, query)
        items = sorted(
            (o for o in col.objects.values() if _matches(o, selector, namespace)),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        rv, offset = self.rv, 0
        if "continue" in query:
            rv_text, offset_text = query["continue"].split(":")
            rv, offset = int(rv_text), int(offset_text)
            if rv < self.compacted:
                raise _status(410, "Expired", "The provided continue parameter is too old")
        limit = int(query.get("limit") or 0)
        page = items[offset : offset + limit] if limit else items[offset:]
        meta: Obj = {"resourceVersion": str(rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = f"{rv}:{offset + limit}"
        if self.after_list_page is not None:
            self.after_list_page()
        return web.json_response({"kind": "List", "metadata": meta, "items": page})

    async def _patch_status(self, request: web.Request) -> web.Response:
        """A JSON merge patch of an object's ``status`` (the only write the activator does)."""
        self.requests.append((request.method + " " + request.path, dict(request.query)))
        self._check_auth(request)
        one = _OBJECT.match(request.path.removesuffix("/status"))
        if one is None or not request.path.endswith("/status"):
            raise _status(404, "NotFound", f"the server could not find {request.path}")
        if request.content_type != "application/merge-patch+json":
            raise _status(415, "UnsupportedMediaType", f"{request.content_type} is not supported")
        prefix, namespace, plural, name = one.groups()
        if ("patch", plural) in self._forbidden:
            raise _status(
                403, "Forbidden", f'User "{IDENTITY}" cannot patch resource "{plural}/status"'
            )
        obj = self._col(prefix, plural).objects.get((namespace, name))
        if obj is None:
            raise _status(404, "NotFound", f'{plural} "{name}" not found')
        patch = await request.json()
        obj = copy.deepcopy(obj)
        obj["status"] = {**(obj.get("status") or {}), **(patch.get("status") or {})}
        return web.json_response(await self._record(prefix, plural, "MODIFIED", obj))

    async def _watch(
        self,
        request: web.Request,
        col: _Collection,
        selector: str | None,
        namespace: str | None,
        query: dict[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        since = int(query.get("resourceVersion") or self.rv)
        if since < self.compacted:
            gone = {
                "kind": "Status",
                "status": "Failure",
                "message": f"too old resource version: {since} ({self.compacted})",
                "reason": "Expired",
                "code": 410,
            }
            await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return resp
        timeout = min(float(query.get("timeoutSeconds") or 1e9), self.max_watch_seconds)
        deadline = asyncio.get_running_loop().time() + timeout
        closing, sent, pos = self._closing, 0, 0
        while True:
            while pos < len(col.history):
                rv, kind, obj = col.history[pos]
                pos += 1
                if rv <= since or (kind != "BOOKMARK" and not _matches(obj, selector, namespace)):
                    continue
                if kind == "BOOKMARK" and query.get("allowWatchBookmarks") != "true":
                    continue
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                sent += 1
                if self.close_watches_after is not None and sent >= self.close_watches_after:
                    return resp
            if self._closing != closing:
                return resp
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return resp
            try:
                async with asyncio.timeout(left), self._changed:
                    await self._changed.wait()
            except TimeoutError:
                return resp


def _status(code: int, reason: str, message: str) -> web.HTTPException:
    body = json.dumps(
        {"kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": code}
    )
    cls = _ERRORS[code]
    return cls(text=body, content_type="application/json")


_ERRORS: dict[int, type[web.HTTPException]] = {
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    410: web.HTTPGone,
    415: web.HTTPUnsupportedMediaType,
}
