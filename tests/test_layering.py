"""The import rules of DESIGN.md §1, and the queue-proxy's dependency diet.

Arrows only point down: serving → activator → proxy, queueproxy → proxy. The static check reads
every module's imports; the dynamic check imports the queue-proxy entry point in a fresh
interpreter and looks at what actually got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "queueproxy", "activator", "serving")

# What each package may import, beyond the standard library.
ALLOWED_THIRD_PARTY: dict[str, set[str]] = {
    # HTTP/2 is the engine's own codec over hpack (docs/design.md): h2 is a test peer only.
    "proxy": {"uvloop", "httptools", "prometheus_client", "google", "hpack"},
    # The sidecar's diet: its idle-RSS budget has no room for protobuf or prometheus_client.
    "queueproxy": {"uvloop", "httptools"},
    "activator": {
        "uvloop",
        "httptools",
        "prometheus_client",
        "google",
        "aiohttp",
        "yaml",
        "kubernetes_asyncio",
    },
    "serving": {"uvloop", "httptools", "prometheus_client", "google", "aiohttp", "yaml"},
}
ALLOWED_INTERNAL: dict[str, set[str]] = {
    "proxy": {"proxy"},
    "queueproxy": {"queueproxy", "proxy"},
    "activator": {"activator", "proxy"},
    "serving": {"serving", "activator", "proxy"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_design_allows(package: str) -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    internal_all = set(PACKAGES)
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if name in stdlib:
                continue
            if name in internal_all:
                if name not in ALLOWED_INTERNAL[package]:
                    problems.append(f"{path.relative_to(ROOT)} imports {name}")
            elif name not in ALLOWED_THIRD_PARTY[package]:
                problems.append(f"{path.relative_to(ROOT)} imports third-party {name}")
    assert problems == []


def test_kubernetes_client_is_confined_to_one_activator_module() -> None:
    users = [
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "kubernetes_asyncio" in _imports(path)
    ]
    assert len(users) <= 1


def _full_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


#: The HTTP engine: every module directly in ``proxy/``. The data-plane toolbox is
#: ``proxy/dataplane/``; it may use the engine, never the other way round.
ENGINE = sorted((ROOT / "proxy").glob("*.py"))


def test_the_engine_does_not_import_the_data_plane_toolbox() -> None:
    assert len(ENGINE) >= 8
    problems = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in ENGINE
        for name in sorted(_full_imports(path))
        if name == "proxy.dataplane" or name.startswith("proxy.dataplane.")
    ]
    assert problems == []


def test_the_toolbox_is_found_by_the_engine_rule() -> None:
    # The rule above would pass vacuously if the toolbox moved: pin where it lives.
    toolbox = {path.stem for path in (ROOT / "proxy" / "dataplane").glob("*.py")}
    assert {"breaker", "deadline", "drain", "concurrency", "prober"} <= toolbox
    assert not {"breaker", "deadline", "drain"} & {path.stem for path in ENGINE}


def test_queue_proxy_entry_point_loads_no_heavy_dependencies() -> None:
    code = (
        "import sys, queueproxy.main\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'aiohttp', 'kubernetes_asyncio', 'yaml', 'activator', 'serving', 'multidict', 'yarl',"
        " 'google', 'prometheus_client'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_engine_refuses_to_run_without_compiled_parser() -> None:
    import httptools

    from proxy import http1

    assert vars(http1)["httptools"] is httptools
    # httptools ships only a compiled llhttp parser; a pure-Python fallback would be a
    # different (and, for aiohttp, a divergent) parser. The engine checks at import time.
    assert hasattr(httptools.HttpRequestParser, "feed_data")
    assert http1.parser_is_compiled()
