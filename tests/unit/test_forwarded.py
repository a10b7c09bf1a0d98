"""The Forwarded shim (reference §1.19, §5.5) as a table."""

from __future__ import annotations

import pytest

from queueproxy.forwarded import forwarded_value

H = list[tuple[bytes, bytes]]


def hdrs(xff: str | None = None, xfh: str | None = None, xfp: str | None = None) -> H:
    out: H = []
    if xff is not None:
        out.append((b"X-Forwarded-For", xff.encode()))
    if xfh is not None:
        out.append((b"X-Forwarded-Host", xfh.encode()))
    if xfp is not None:
        out.append((b"X-Forwarded-Proto", xfp.encode()))
    return out


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (hdrs(), None),
        (hdrs(xff="127.0.0.1"), b"for=127.0.0.1"),
        (hdrs(xff="127.0.0.1, 127.0.0.2"), b"for=127.0.0.1, for=127.0.0.2"),
        (hdrs(xff="127.0.0.1,127.0.0.2"), b"for=127.0.0.1, for=127.0.0.2"),
        (hdrs(xff="::1"), b'for="[::1]"'),
        (hdrs(xff="2001:db8:cafe::17"), b'for="[2001:db8:cafe::17]"'),
        (hdrs(xff="127.0.0.1:8080"), b'for="[127.0.0.1:8080]"'),
        (hdrs(xfh="h"), b"host=h"),
        (hdrs(xfp="p"), b"proto=p"),
        (hdrs(xfh="h", xfp="p"), b"host=h;proto=p"),
        (hdrs(xff="127.0.0.1", xfp="https"), b"for=127.0.0.1;proto=https"),
        (hdrs(xff="127.0.0.1", xfh="example.com"), b"for=127.0.0.1;host=example.com"),
        (
            hdrs(xff="127.0.0.1, ::1", xfh="h", xfp="p"),
            b'for=127.0.0.1;host=h;proto=p, for="[::1]"',
        ),
        (hdrs(xff=",,,"), b"for=, for=, for="),
        (hdrs(xff=",10.0.0.1", xfh="h"), b"host=h, for=10.0.0.1"),
        (hdrs(xff="", xfh="", xfp=""), None),
    ],
)
def test_forwarded_value_table(headers: H, expected: bytes | None) -> None:
    assert forwarded_value(headers) == expected


def test_existing_forwarded_header_is_left_untouched() -> None:
    headers = [(b"Forwarded", b"for=1.2.3.4"), *hdrs(xff="127.0.0.1", xfh="h")]
    assert forwarded_value(headers) is None


def test_header_names_compare_case_insensitively() -> None:
    headers = [(b"x-forwarded-for", b"10.0.0.1"), (b"X-FORWARDED-PROTO", b"http")]
    assert forwarded_value(headers) == b"for=10.0.0.1;proto=http"
    assert forwarded_value([(b"FORWARDED", b"x"), (b"x-forwarded-for", b"1.1.1.1")]) is None


def test_only_first_line_of_each_header_is_used() -> None:
    headers = [(b"X-Forwarded-For", b"10.0.0.1"), (b"X-Forwarded-For", b"10.0.0.2")]
    assert forwarded_value(headers) == b"for=10.0.0.1"


def test_x_forwarded_by_is_ignored() -> None:
    assert forwarded_value([(b"X-Forwarded-By", b"proxy")]) is None


def test_unrelated_headers_add_nothing() -> None:
    assert forwarded_value([(b"Host", b"example.com"), (b"User-Agent", b"curl")]) is None
