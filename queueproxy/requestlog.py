"""Request log lines rendered from a Go ``text/template`` subset (reference §1.22).

Knative formats each finished request through ``SERVING_REQUEST_LOG_TEMPLATE``. Sluice
compiles that template once into a list of literal strings and small closures, so a log
line costs one pass over the parts. The subset covers what real templates use:

* fields ``.Request.{Method,RequestURI,Host,ContentLength,UserAgent,RemoteAddr,Referer,
  Proto,Header}``, ``.Response.{Code,Size,Latency}``,
  ``.Revision.{Name,Namespace,Service,Configuration,PodName,PodIP}`` and Knative 1.19+'s
  ``.TraceID`` (``traceparent``'s trace id, else ``X-B3-Traceid``);
* ``.Request.Header.Get "X"`` (case-insensitive, first value or empty) and
  ``index .Request.Header "X"`` (exact canonical key, printed as Go prints a slice:
  ``[v1 v2]``, or ``[]`` when absent; that is why Knative's default line shows
  ``"traceId": "[]"``);
* the ``js`` function, called (``js .X``) or piped (``.X | js``); comments; ``{{-``/``-}}``.

Any other construct makes the template unusable: the logger then uses Knative's default
template and says so once on stderr. Values print as Go's ``%v`` does (floats such as the
latency in shortest form, ``1.5e-05`` below 1e-4).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from queueproxy.metrics import format_go_float

#: Knative's default ``logging.request-log-template`` (config-observability).
DEFAULT_TEMPLATE = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", '
    '"requestUrl": "{{js .Request.RequestURI}}", '
    '"requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, '
    '"responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", '
    '"remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", '
    '"referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", '
    '"protocol": "{{.Request.Proto}}"}, '
    '"traceId": "{{index .Request.Header "X-B3-Traceid"}}"}'
)


class TemplateError(ValueError):
    """The template uses something outside the supported subset."""


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    name: str = ""
    namespace: str = ""
    service: str = ""
    configuration: str = ""
    pod_name: str = ""
    pod_ip: str = ""


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One finished request. ``content_length`` is -1 when unknown (chunked), as in Go."""

    method: str
    request_uri: str
    host: str = ""
    proto: str = "HTTP/1.1"
    content_length: int = 0
    user_agent: str = ""
    remote_addr: str = ""
    referer: str = ""
    #: Request headers as received (name, value); decoded only if the template reads them.
    headers: Sequence[tuple[bytes, bytes]] = ()
    code: int = 200
    size: int = 0
    latency_seconds: float = 0.0


class _Header:
    """A Go ``http.Header`` view: canonical names mapping to value lists."""

    __slots__ = ("values",)

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self.values: dict[str, list[str]] = {}
        for name, value in raw:
            key = canonical_header_key(name.decode("latin-1"))
            self.values.setdefault(key, []).append(value.decode("latin-1"))

    def get(self, name: str) -> str:
        found = self.values.get(canonical_header_key(name))
        return found[0] if found else ""


def trace_id(headers: _Header) -> str:
    """The ``.TraceID`` of Knative 1.19+'s template input: the trace-id field of the W3C
    ``traceparent`` header, else ``X-B3-Traceid``, else empty."""
    parent = headers.get("Traceparent")
    if parent:
        parts = parent.split("-", 2)
        if len(parts) >= 2:
            return parts[1]
    return headers.get("X-B3-Traceid")


def canonical_header_key(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey`` for token names: ``x-b3-traceid`` → ``X-B3-Traceid``."""
    if not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


# --- values and Go formatting -----------------------------------------------------

_Ctx = tuple[RequestLogEntry, RevisionInfo]
_Eval = Callable[[_Ctx], Any]

_REQUEST_FIELDS: dict[str, Callable[[RequestLogEntry], Any]] = {
    "Method": lambda e: e.method,
    "RequestURI": lambda e: e.request_uri,
    "Host": lambda e: e.host,
    "ContentLength": lambda e: e.content_length,
    "UserAgent": lambda e: e.user_agent,
    "RemoteAddr": lambda e: e.remote_addr,
    "Referer": lambda e: e.referer,
    "Proto": lambda e: e.proto,
    "Header": lambda e: _Header(e.headers),
}
_RESPONSE_FIELDS: dict[str, Callable[[RequestLogEntry], Any]] = {
    "Code": lambda e: e.code,
    "Size": lambda e: e.size,
    "Latency": lambda e: e.latency_seconds,
}
_REVISION_FIELDS = {
    "Name": "name",
    "Namespace": "namespace",
    "Service": "service",
    "Configuration": "configuration",
    "PodName": "pod_name",
    "PodIP": "pod_ip",
}


def go_sprint(value: Any) -> str:
    """Format one value as Go's ``%v``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_go_float(value, exp_threshold=21)
    if isinstance(value, list):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    if isinstance(value, _Header):
        items = (f"{k}:{go_sprint(v)}" for k, v in sorted(value.values.items()))
        return "map[" + " ".join(items) + "]"
    return str(value)


_JS_SPECIAL = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def js_escape(text: str) -> str:
    """Go's ``template.JSEscapeString``: quotes, ``<>&=``, controls and unprintables."""
    out = []
    for ch in text:
        if ch in _JS_SPECIAL:
            out.append(_JS_SPECIAL[ch])
        elif ch < " " or (ch >= "\x7f" and not ch.isprintable()):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


# --- compiling --------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*(?:(\|)|("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\.[A-Za-z0-9_.]*)|([A-Za-z_]\w*))')


def _tokens(action: str) -> list[str]:
    pos, out = 0, []
    action = action.strip()
    while pos < len(action):
        m = _TOKEN.match(action, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"unsupported syntax in {{{{{action}}}}}")
        out.append(m.group(m.lastindex or 0))
        pos = m.end()
    return out


def _string_literal(tok: str) -> str | None:
    if tok.startswith("`"):
        return tok[1:-1]
    if tok.startswith('"'):
        body = tok[1:-1]
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), body)
    return None


def _field(path: str, args: list[str]) -> _Eval:
    parts = path.split(".")[1:]
    if len(parts) == 3 and parts[:2] == ["Request", "Header"] and parts[2] == "Get":
        key = _string_literal(args[0]) if len(args) == 1 else None
        if key is None:
            raise TemplateError("Header.Get takes one string argument")
        return lambda c: _Header(c[0].headers).get(key)
    if parts == ["TraceID"] and not args:
        return lambda c: trace_id(_Header(c[0].headers))
    if args or len(parts) != 2:
        raise TemplateError(f"unsupported field {path}")
    group, name = parts
    if group == "Request" and name in _REQUEST_FIELDS:
        req = _REQUEST_FIELDS[name]
        return lambda c: req(c[0])
    if group == "Response" and name in _RESPONSE_FIELDS:
        resp = _RESPONSE_FIELDS[name]
        return lambda c: resp(c[0])
    if group == "Revision" and name in _REVISION_FIELDS:
        attr = _REVISION_FIELDS[name]
        return lambda c: getattr(c[1], attr)
    raise TemplateError(f"unsupported field {path}")


def _operand(tok: str) -> _Eval:
    lit = _string_literal(tok)
    if lit is not None:
        return lambda c: lit
    if tok.startswith("."):
        return _field(tok, [])
    raise TemplateError(f"unsupported operand {tok}")


def _index(coll: Any, key: Any) -> Any:
    if isinstance(coll, _Header) and isinstance(key, str):
        return list(coll.values.get(key, []))  # exact key, like a Go map lookup
    raise TypeError(f"can't index {type(coll).__name__} with {type(key).__name__}")


def _command(words: list[str], piped: _Eval | None) -> _Eval:
    head, rest = words[0], words[1:]
    if head in ("js", "index"):
        operands = [_operand(t) for t in rest] + ([piped] if piped else [])
        if head == "js":
            if not operands:
                raise TemplateError("js needs an argument")
            return lambda c: js_escape("".join(go_sprint(o(c)) for o in operands))
        if len(operands) != 2:
            raise TemplateError("index takes a collection and one key")
        coll, key = operands
        return lambda c: _index(coll(c), key(c))
    if piped is not None or not head.startswith("."):
        raise TemplateError(f"unsupported command {head}")
    return _field(head, rest)


def _pipeline(action: str) -> _Eval | None:
    if action.strip().startswith("/*"):
        if not action.strip().endswith("*/"):
            raise TemplateError("unterminated comment")
        return None
    tokens = _tokens(action)
    commands: list[list[str]] = [[]]
    for tok in tokens:
        if tok == "|":
            commands.append([])
        else:
            commands[-1].append(tok)
    if any(not cmd for cmd in commands):
        raise TemplateError("empty command in pipeline")
    result: _Eval | None = None
    for cmd in commands:
        result = _command(cmd, result)
    return result


def compile_template(template: str) -> list[str | _Eval]:
    """Compile ``template`` (a newline is appended if missing); raises ``TemplateError``."""
    if not template.endswith("\n"):
        template += "\n"
    parts: list[str | _Eval] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if text:
            parts.append(text)
        evaluator = _pipeline(m.group(2))
        if evaluator is not None:
            parts.append(evaluator)
        pos = m.end()
        if m.group(3):
            stripped = template[pos:].lstrip()
            pos = len(template) - len(stripped)
    tail = template[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action")
    if tail:
        parts.append(tail)
    return parts


class RequestLogger:
    """Writes one line per finished request to ``out``.

    An empty ``template`` means Knative's default template (request logging was asked
    for explicitly). An unsupported template is replaced by the default, with one
    warning on stderr at construction. If rendering a line fails, Knative's fallback
    line ``Invalid request log template: ...`` is written instead.
    """

    def __init__(self, template: str, revision: RevisionInfo, out: TextIO | None = None) -> None:
        self._revision = revision
        self._out = out if out is not None else sys.stdout
        try:
            self._parts = compile_template(template or DEFAULT_TEMPLATE)
        except TemplateError as exc:
            print(
                f"request log template not supported ({exc}); using the default template",
                file=sys.stderr,
                flush=True,
            )
            self._parts = compile_template(DEFAULT_TEMPLATE)

    def render(self, entry: RequestLogEntry) -> str:
        """The line (with its newline) for ``entry``."""
        ctx = (entry, self._revision)
        try:
            return "".join(p if isinstance(p, str) else go_sprint(p(ctx)) for p in self._parts)
        except Exception:
            return (
                f"Invalid request log template: method: {entry.method}, response code: "
                f"{entry.code}, latency: {go_sprint(entry.latency_seconds)}, "
                f"url: {entry.request_uri}\n"
            )

    def log(self, entry: RequestLogEntry) -> None:
        """Render and write one line, flushed so that lines survive a crash."""
        self._out.write(self.render(entry))
        self._out.flush()
