"""Source rules of the request path that instruction counts found (``proxy/http1.py``'s
docstring lists them); the ones a scan of the source can check are checked here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The modules every proxied request runs through.
HOT = [
    "proxy/http1.py",
    "proxy/exchange.py",
    "proxy/headrules.py",
    "proxy/client.py",
    "proxy/forward.py",
    "proxy/request_head.py",
    "proxy/dataplane/breaker.py",
    "proxy/dataplane/deadline.py",
    "proxy/dataplane/concurrency.py",
    "proxy/headers.py",
    "queueproxy/handler.py",
    "queueproxy/metrics.py",
    "activator/handler.py",
]


def from_imported_method_calls(source: str) -> list[str]:
    """``name.method(...)`` calls where ``name`` came from ``from ... import``."""
    tree = ast.parse(source)
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    return [
        f"line {node.lineno}: {node.func.value.id}.{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in imported
        and not _class_like(node.func.value.id)
    ]


def _class_like(name: str) -> bool:
    """CapWords (a class: its methods here are constructors, never run per request)."""
    return name[:1].isupper() and not name.isupper()


def test_the_scan_finds_the_pattern() -> None:
    source = "from m import TABLE, Table, table\nTABLE.get(1)\nTable.make(2)\ntable.get(3)\n"
    assert from_imported_method_calls(source) == ["line 2: TABLE.get()", "line 4: table.get()"]


@pytest.mark.parametrize("module", HOT)
def test_no_method_is_called_on_a_from_imported_name(module: str) -> None:
    # CPython 3.11 compiles such a call to LOAD_ATTR instead of LOAD_METHOD: a bound method
    # is made and freed on every call (about 400 instructions). Bind the method once at
    # module level instead (``proxy.headers.cached_lower``).
    assert from_imported_method_calls((ROOT / module).read_text()) == []
