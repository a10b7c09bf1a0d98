"""Request log lines from Go-template subsets (reference §1.22)."""

from __future__ import annotations

import io
import json

import pytest

from queueproxy.requestlog import (
    DEFAULT_TEMPLATE,
    RequestLogEntry,
    RequestLogger,
    RevisionInfo,
    TemplateError,
    canonical_header_key,
    compile_template,
    js_escape,
)

REV = RevisionInfo(
    name="hello-00001",
    namespace="default",
    service="hello",
    configuration="hello",
    pod_name="hello-00001-pod",
    pod_ip="10.0.0.7",
)


def entry(**kw: object) -> RequestLogEntry:
    args: dict[str, object] = {
        "method": "GET",
        "request_uri": "/path?q=1",
        "host": "hello.default.example.com",
        "proto": "HTTP/1.1",
        "content_length": 0,
        "user_agent": "curl/8.0",
        "remote_addr": "10.0.0.1:5555",
        "referer": "",
        "headers": [(b"User-Agent", b"curl/8.0"), (b"x-b3-traceid", b"abc123")],
        "code": 200,
        "size": 12,
        "latency_seconds": 0.25,
    }
    args.update(kw)
    return RequestLogEntry(**args)  # type: ignore[arg-type]


def render(template: str, e: RequestLogEntry | None = None) -> str:
    out = io.StringIO()
    RequestLogger(template, REV, out).log(e or entry())
    return out.getvalue()


def test_default_template_renders_knative_json_line() -> None:
    line = render(DEFAULT_TEMPLATE)
    assert line.endswith("}\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "httpRequest": {
            "requestMethod": "GET",
            "requestUrl": "/path?q=1",
            "requestSize": "0",
            "status": 200,
            "responseSize": "12",
            "userAgent": "curl/8.0",
            "remoteIp": "10.0.0.1:5555",
            "serverIp": "10.0.0.7",
            "referer": "",
            "latency": "0.25s",
            "protocol": "HTTP/1.1",
        },
        "traceId": "[abc123]",
    }


def test_default_template_trace_id_prints_empty_go_slice_when_absent() -> None:
    line = render(DEFAULT_TEMPLATE, entry(headers=[]))
    assert json.loads(line)["traceId"] == "[]"


def test_empty_template_uses_default() -> None:
    assert render("") == render(DEFAULT_TEMPLATE)


def test_latency_prints_as_go_float() -> None:
    assert render("{{.Response.Latency}}", entry(latency_seconds=0.000015)) == "1.5e-05\n"
    assert render("{{.Response.Latency}}", entry(latency_seconds=2.0)) == "2\n"
    assert render("{{.Response.Latency}}", entry(latency_seconds=0.001234)) == "0.001234\n"


def test_unknown_content_length_prints_minus_one() -> None:
    assert render("{{.Request.ContentLength}}", entry(content_length=-1)) == "-1\n"


def test_every_supported_field() -> None:
    template = (
        "{{.Request.Method}} {{.Request.RequestURI}} {{.Request.Host}} "
        "{{.Request.ContentLength}} {{.Request.UserAgent}} {{.Request.RemoteAddr}} "
        "{{.Request.Referer}} {{.Request.Proto}} {{.Response.Code}} {{.Response.Size}} "
        "{{.Revision.Name}} {{.Revision.Namespace}} {{.Revision.Service}} "
        "{{.Revision.Configuration}} {{.Revision.PodName}} {{.Revision.PodIP}}"
    )
    e = entry(method="POST", content_length=5, referer="http://r", code=201, proto="HTTP/1.0")
    assert render(template, e) == (
        "POST /path?q=1 hello.default.example.com 5 curl/8.0 10.0.0.1:5555 http://r "
        "HTTP/1.0 201 12 hello-00001 default hello hello hello-00001-pod 10.0.0.7\n"
    )


def test_header_get_is_case_insensitive_and_returns_first_value() -> None:
    e = entry(headers=[(b"X-Test", b"one"), (b"x-test", b"two")])
    assert render('{{.Request.Header.Get "x-TEST"}}', e) == "one\n"
    assert render('{{.Request.Header.Get "Missing"}}', e) == "\n"


def test_index_header_uses_exact_canonical_key_and_prints_slice() -> None:
    e = entry(headers=[(b"X-Test", b"one"), (b"x-test", b"two")])
    assert render('{{index .Request.Header "X-Test"}}', e) == "[one two]\n"
    assert render('{{index .Request.Header "x-test"}}', e) == "[]\n"


def test_whole_header_map_prints_like_go() -> None:
    e = entry(headers=[(b"b", b"2"), (b"A", b"1")])
    assert render("{{.Request.Header}}", e) == "map[A:[1] B:[2]]\n"


def test_js_function_and_pipe_escape() -> None:
    e = entry(request_uri='/a?x="<\'&>"')
    expected = '/a?x\\u003D\\"\\u003C\\\'\\u0026\\u003E\\"\n'
    assert render("{{js .Request.RequestURI}}", e) == expected
    assert render("{{.Request.RequestURI | js}}", e) == expected


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain", "plain"),
        ("a\\b", "a\\\\b"),
        ("line\nbreak\t", "line\\u000Abreak\\u0009"),
        ("\x7f", "\\u007F"),
        ("héllo", "héllo"),
        ("\u2028", "\\u2028"),
        ("=", "\\u003D"),
    ],
)
def test_js_escape(text: str, escaped: str) -> None:
    assert js_escape(text) == escaped


def test_trailing_newline_is_appended_once() -> None:
    assert render("x {{.Response.Code}}\n") == "x 200\n"
    assert render("x {{.Response.Code}}") == "x 200\n"


def test_comments_and_trim_markers() -> None:
    assert render("a {{/* note */}}b") == "a b\n"
    assert render("a   {{- .Response.Code -}}   b") == "a200b\n"


def test_raw_string_argument() -> None:
    e = entry(headers=[(b"X-Id", b"7")])
    assert render("{{.Request.Header.Get `X-Id`}}", e) == "7\n"


@pytest.mark.parametrize(
    "template",
    [
        "{{if .Request.Method}}x{{end}}",
        "{{.Request.URL.Path}}",
        '{{printf "%s" .Request.Method}}',
        "{{.Request.Nope}}",
        "{{.Request}}",
        "{{$x := 1}}",
        "{{.Request.Method",
        "{{js}}",
        '{{index .Request.Header "a" "b"}}',
        "{{.Request.Method | .Request.Host}}",
        "{{.Request.Header.Get}}",
    ],
)
def test_unsupported_template_does_not_compile(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


def test_unsupported_template_falls_back_to_default_with_one_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    logger = RequestLogger("{{.Request.URL.Path}}", REV, out)
    logger.log(entry())
    logger.log(entry())
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["httpRequest"]["requestMethod"] == "GET"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "default template" in err


def test_execution_failure_writes_knative_fallback_line() -> None:
    line = render('{{index .Request.Method "x"}}', entry(latency_seconds=0.5, code=404))
    assert line == (
        "Invalid request log template: method: GET, response code: 404, latency: 0.5, "
        "url: /path?q=1\n"
    )


def test_default_output_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    RequestLogger("{{.Response.Code}}", REV).log(entry())
    assert capsys.readouterr().out == "200\n"


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("x-b3-traceid", "X-B3-Traceid"),
        ("CONTENT-TYPE", "Content-Type"),
        ("user-agent", "User-Agent"),
        ("a", "A"),
        ("bad name", "bad name"),
    ],
)
def test_canonical_header_key(name: str, canonical: str) -> None:
    assert canonical_header_key(name) == canonical
