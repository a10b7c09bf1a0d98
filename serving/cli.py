"""The ``sluice`` command: ``up`` runs everything; the other commands talk to it over HTTP.

Exit codes: 0 success, 1 refused, failed or misused (one line per problem on stderr).
The client commands find the API at ``--api``, else ``$SLUICE_API``, else 127.0.0.1:8081.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from activator.model import DEFAULT_DOMAIN
from serving import kn, kubeprint, render
from serving.settings import (
    DEFAULT_PORT,
    UpSettings,
    api_address,
    autoscaler_from_flags,
    default_state_dir,
    queue_proxy_argv,
    split_address,
)

CLIENT_TIMEOUT = 30.0


class CliError(Exception):
    """A failure to report on stderr, one message per line, exit code 1."""

    def __init__(self, messages: Sequence[str], prefix: str = "error: ") -> None:
        self.messages = list(messages)
        self.prefix = prefix
        super().__init__("\n".join(self.messages))


class Client:
    def __init__(self, address: str) -> None:
        host, port = split_address(address)
        self.base = f"http://{host}:{port}"

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        timeout: float | None = CLIENT_TIMEOUT,
        stream: TextIO | None = None,
    ) -> Any:
        """The JSON (or text) answer; with ``stream`` the body is copied there as it comes."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if stream is not None:
                    for chunk in iter(lambda: resp.read1(65536), b""):
                        stream.write(chunk.decode(errors="replace"))
                        stream.flush()
                    return None
                raw = resp.read()
                kind = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            try:
                errors = json.loads(exc.read()).get("errors", [])
            except ValueError:
                errors = []
            raise CliError(errors or [f"{method} {path}: HTTP {exc.code}"]) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                [f"cannot reach sluice at {self.base} ({reason}); is `sluice up` running?"]
            ) from None
        return json.loads(raw) if kind.startswith("application/json") else raw.decode()


def read_documents(paths: Sequence[str]) -> list[dict[str, str]]:
    """``-f`` arguments → API documents; a directory means its *.yaml/*.yml files."""
    docs: list[dict[str, str]] = []
    for raw in paths:
        if raw == "-":
            docs.append({"source": "<stdin>", "text": sys.stdin.read(), "workdir": os.getcwd()})
            continue
        path = Path(raw).resolve()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            files = [path]
        else:
            raise CliError([f"{raw}: no such file or directory"])
        for file in files:
            docs.append({"source": raw if path == file else str(file), "text": file.read_text(),
                         "workdir": str(file.parent)})  # fmt: skip
    return docs


def _cmd_up(args: argparse.Namespace) -> int:
    from proxy.runner import run
    from serving.containers import RuntimeError_, detect_runtime
    from serving.up import serve

    if args.runtime is not None:
        try:
            detect_runtime(args.runtime)  # refused at once, in one line, if unusable
        except RuntimeError_ as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        # Read by every pod plan (serving.containers.default_runtime).
        os.environ["SLUICE_RUNTIME"] = args.runtime

    try:
        settings = UpSettings(
            state_dir=Path(args.state_dir).expanduser() if args.state_dir else default_state_dir(),
            port=args.port,
            host=args.host,
            api=api_address(args.api),
            domain=args.domain,
            autoscaler=autoscaler_from_flags(args.autoscaler),
            queue_proxy_argv=queue_proxy_argv(),
            reapply=args.reapply,
            fresh=args.fresh,
            server_timing=args.server_timing,
        )
    except ValueError as exc:
        raise CliError([str(exc)]) from None
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(lambda: serve(settings, args.paths))


def _cmd_reset(args: argparse.Namespace) -> int:
    from serving.state import StateLock, reset_state

    state_dir = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    lock = StateLock(state_dir)
    try:
        lock.acquire()
    except (ValueError, OSError) as exc:
        raise CliError([str(exc)]) from None
    try:
        removed = reset_state(state_dir)
    finally:
        lock.release()
    print(f"state in {state_dir} cleared" if removed else f"state in {state_dir} already empty")
    return 0


def _cmd_apply(args: argparse.Namespace, client: Client) -> int:
    docs = read_documents(args.filename)
    if args.namespace:
        # The server defaults the namespace, so file:line in its messages stay true.
        docs = [{**d, "namespace": args.namespace} for d in docs]
    result = client.call("POST", "/api/v1/apply", {"documents": docs})
    print_warnings(result)
    print("\n".join(result["messages"]))
    if args.wait:
        for namespace, name in result["services"]:
            wait_ready(client, namespace, name, args.timeout)
    return 0


def print_warnings(result: dict[str, Any]) -> None:
    """The server's warnings (fields it ignores) on stderr, as kubectl prints them."""
    for warning in result.get("warnings", []):
        print(f"Warning: {warning}", file=sys.stderr)


def wait_ready(client: Client, namespace: str, name: str, timeout: float) -> None:
    """Block until the service is Ready and routed (``CliError`` if it fails or times out)."""
    path = f"/api/v1/namespaces/{namespace}/services/{name}/wait?timeout={timeout:g}"
    client.call("GET", path, timeout=timeout + CLIENT_TIMEOUT)


def _service_flags(args: argparse.Namespace) -> kn.ServiceFlags:
    return kn.ServiceFlags(
        name=args.name,
        namespace=args.namespace,
        image=args.image,
        command=tuple(args.cmd),
        args=tuple(args.arg),
        port=args.port,
        env=tuple(args.env),
        annotations=tuple(args.annotation),
        concurrency_limit=args.concurrency_limit,
        scale_min=args.scale_min,
        scale_max=args.scale_max,
        traffic=tuple(args.traffic),
        tags=tuple(args.tag),
        untag=tuple(args.untag),
        revision_name=args.revision_name,
    )


def _current_manifest(client: Client, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        data = client.call("GET", f"/api/v1/namespaces/{namespace}/services/{name}")
    except CliError as exc:
        if any("not found" in m for m in exc.messages):
            return None
        raise
    manifest: dict[str, Any] = data["manifest"]
    return manifest


def _cmd_service(args: argparse.Namespace, client: Client) -> int:
    ns, name = args.namespace, getattr(args, "name", "")
    if args.action == "list":
        args.kind, args.names, args.output, args.selector = "ksvc", [], "", ""
        args.all_namespaces = getattr(args, "all_namespaces", False)
        return _cmd_get(args, client)
    if args.action == "delete":
        client.call("DELETE", f"/api/v1/namespaces/{ns}/services/{name}")
        print(f"Service '{name}' successfully deleted in namespace '{ns}'.")
        return 0
    current = _current_manifest(client, ns, name)
    if args.action == "create" and current is not None and not args.force:
        raise CliError([f"cannot create service '{name}' in namespace '{ns}' because the "
                        "service already exists and no --force option was given"])  # fmt: skip
    if args.action == "update" and current is None:
        raise CliError([f'services.serving.knative.dev "{name}" not found in namespace {ns}'])
    manifest = kn.edit_service(None if args.action == "create" else current, _service_flags(args))
    doc = {"source": f"service {args.action} {name}", "text": json.dumps(manifest),
           "workdir": os.getcwd()}  # fmt: skip
    print_warnings(client.call("POST", "/api/v1/apply", {"documents": [doc]}))
    verb = {"create": "created", "update": "updated"}[args.action]
    if not args.wait:
        print(f"Service '{name}' {verb} in namespace '{ns}'.")
        return 0
    wait_ready(client, ns, name, args.wait_timeout)
    svc = client.call("GET", f"/api/v1/namespaces/{ns}/services/{name}")
    print(f"Service '{name}' {verb} to latest revision '{svc['latestReady']}' is available at "
          f"URL:\n{svc['url']}")  # fmt: skip
    return 0


def _cmd_revision(args: argparse.Namespace, client: Client) -> int:
    items = client.call("GET", "/api/v1/revisions")["items"]
    namespace = None if args.all_namespaces else args.namespace
    rows = [r for r in items if (namespace is None or r["namespace"] == namespace)
            and (not args.service or r["service"] == args.service)]  # fmt: skip
    if not rows:
        print(kubeprint.no_resources(namespace), file=sys.stderr)
        return 0
    print(render.revisions(rows))
    return 0


def _cmd_version(args: argparse.Namespace, client: Client) -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("sluice")
    except PackageNotFoundError:
        mine = "(not installed)"
    print(f"Client Version: sluice {mine}")
    print("Serving API: serving.knative.dev/v1 (Knative Serving v1.23 data plane)")
    try:
        info = client.call("GET", "/api/v1/info", timeout=2)
        print(f"Server: {info['api']} (state in {info['stateDir']})")
    except CliError:
        print("Server: not running")
    return 0


def _cmd_delete(args: argparse.Namespace, client: Client) -> int:
    result = client.call("DELETE", f"/api/v1/namespaces/{args.namespace}/services/{args.name}")
    print("\n".join(result["messages"]))
    return 0


def _cmd_get(args: argparse.Namespace, client: Client) -> int:
    res = kubeprint.resource(args.kind)
    if args.output not in ("", *kubeprint.OUTPUTS):
        raise CliError([f"-o {args.output}: want one of {', '.join(kubeprint.OUTPUTS)}"])
    selector = kubeprint.parse_selector(args.selector) if args.selector else ()
    namespace = None if args.all_namespaces else args.namespace
    if args.all_namespaces and args.names:
        raise CliError(["a resource cannot be retrieved by name across all namespaces (-A)"])
    items = client.call("GET", f"/api/v1/objects/{res.plural}")["items"]
    found = kubeprint.select(items, namespace, args.names, selector)
    lost = kubeprint.missing(found, args.names)
    if found or (args.output in ("json", "yaml") and not args.names):
        print(kubeprint.render_objects(res, found, args.output, args.all_namespaces,
                                       single=len(args.names) == 1))  # fmt: skip
    elif not lost:
        print(kubeprint.no_resources(namespace), file=sys.stderr)
    if lost:
        raise CliError([kubeprint.not_found(res, name) for name in lost], prefix="")
    return 0


def _cmd_describe(args: argparse.Namespace, client: Client) -> int:
    data = client.call("GET", f"/api/v1/namespaces/{args.namespace}/services/{args.name}")
    print(json.dumps(data, indent=2) if args.output == "json" else render.describe(data))
    return 0


def _cmd_top(args: argparse.Namespace, client: Client) -> int:
    while True:
        frame = render.top(client.call("GET", "/api/v1/top"))
        if args.once:
            print(frame)
            return 0
        sys.stdout.write("\x1b[H\x1b[2J" + frame + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)


def _cmd_logs(args: argparse.Namespace, client: Client) -> int:
    container = "all" if args.all_containers else args.container
    query = f"?tail={args.tail}&container={container}" + ("&follow=1" if args.follow else "")
    path = f"/api/v1/namespaces/{args.namespace}/logs/{args.name}{query}"
    if args.follow:
        client.call("GET", path, timeout=None, stream=sys.stdout)
    else:
        sys.stdout.write(client.call("GET", path))
    return 0


def _seconds(raw: str) -> float:
    """``600``, ``600s``, ``10m``: kubectl's durations for ``--timeout``."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(raw[-1:], 0)
    try:
        value = float(raw[:-1] if scale else raw) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: want seconds, e.g. 90s or 5m") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be positive")
    return value


def _add_kn_flags(p: argparse.ArgumentParser) -> None:
    """kn service create/update flags (repeatable ones append)."""
    p.add_argument("--image", help="container image")
    p.add_argument("--cmd", action="append", default=[], help="command word (repeatable)")
    p.add_argument("--arg", action="append", default=[], help="argument (repeatable)")
    p.add_argument("--port", help="container port: PORT or NAME:PORT")
    p.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE or KEY-")
    p.add_argument("-a", "--annotation", action="append", default=[], help="KEY=VALUE or KEY-")
    p.add_argument("--concurrency-limit", type=int, help="containerConcurrency")
    p.add_argument("--scale-min", type=int, help="min-scale annotation")
    p.add_argument("--scale-max", type=int, help="max-scale annotation")
    p.add_argument("--traffic", action="append", default=[], help="REV=PCT, @latest=PCT, TAG=PCT")
    p.add_argument("--tag", action="append", default=[], help="REV=TAG or @latest=TAG")
    p.add_argument("--untag", action="append", default=[], help="TAG")
    p.add_argument("--revision-name", help="name of the new revision (SERVICE-...)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait until Ready and routed (default; --no-wait to skip)")  # fmt: skip
    p.add_argument("--wait-timeout", type=_seconds, default=600.0, help="seconds (600)")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 1, as every other refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {self.prog}: {message}\n")


def _add_namespace(p: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace (default)")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def build_parser() -> argparse.ArgumentParser:
    api_help = "API address host:port (default $SLUICE_API or 127.0.0.1:8081)"
    p = Parser(prog="sluice", description="Knative Serving on one machine")
    p.add_argument("--api", help=api_help)
    common = Parser(add_help=False)
    # SUPPRESS: an --api given before the subcommand is not reset by the subparser.
    common.add_argument("--api", default=argparse.SUPPRESS, help=api_help)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    up = add("up", "run the control plane, the activator and the API")
    up.add_argument("paths", nargs="*", help="manifest files or directories to apply")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="traffic port (8080)")
    up.add_argument("--host", default="127.0.0.1", help="traffic address (127.0.0.1)")
    up.add_argument("--domain", default=DEFAULT_DOMAIN, help="route domain (localhost)")
    up.add_argument("--state-dir", help="state directory (default $XDG_DATA_HOME/sluice)")
    up.add_argument(
        "--autoscaler", action="append", default=[], metavar="KEY=VALUE",
        help="config-autoscaler setting, e.g. stable-window=10s (repeatable)",
    )  # fmt: skip
    up.add_argument(
        "--runtime", choices=("podman", "docker", "process"), default=None,
        help="how containers with an image run (default: podman or docker, whichever is "
        "installed; process: only command/args, as local processes)",
    )  # fmt: skip
    up.add_argument("--reapply", action="store_true",
                    help="apply PATHs even though the state is not fresh")  # fmt: skip
    up.add_argument("--fresh", action="store_true",
                    help="clear the state first (as sluice reset), then apply PATHs")  # fmt: skip
    up.add_argument("-v", "--verbose", action="store_true", help="log activator details")
    up.add_argument("--server-timing", action="store_true",
                    help="answer every cold start with a Server-Timing breakdown of its wait "
                    "(per revision: annotation sluice.dev/server-timing)")  # fmt: skip

    reset = add("reset", "clear the saved state and logs (sluice up must not be running)")
    reset.add_argument("--state-dir", help="state directory (default $XDG_DATA_HOME/sluice)")

    apply = add("apply", "apply Knative Service manifests")
    apply.add_argument("-f", "--filename", action="append", required=True,
                       help="file, directory or - for stdin (repeatable)")  # fmt: skip
    apply.add_argument("-n", "--namespace", default="", help="namespace of objects without one")
    apply.add_argument("--wait", action="store_true", help="return once every service is Ready")
    apply.add_argument("--timeout", type=_seconds, default=600.0, help="--wait limit (600s)")

    delete = add("delete", "delete a service")
    delete.add_argument("kind", choices=["ksvc", "service"])
    delete.add_argument("name")
    delete.add_argument("-n", "--namespace", default="default")

    get = add("get", "list ksvc, configurations, revisions, routes or pods as kubectl does")
    get.add_argument("kind", help="ksvc|configurations|revisions|routes|pods (or a short name)")
    get.add_argument("names", nargs="*", metavar="NAME", help="only these objects")
    _add_namespace(get, all_namespaces=True)
    get.add_argument("-o", "--output", default="", help="wide|json|yaml|name")
    get.add_argument("-l", "--selector", default="", help="label selector, e.g. app=web,tier!=db")

    describe = add("describe", "traffic, conditions and events of a service")
    describe.add_argument("kind", choices=["ksvc", "service"])
    describe.add_argument("name")
    describe.add_argument("-n", "--namespace", default="default")
    describe.add_argument("-o", "--output", choices=["text", "json"], default="text")

    top = add("top", "live view of every revision")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=1.0)

    logs = add("logs", "logs of a revision's (or a pod's) containers, as kubectl logs")
    logs.add_argument("name", metavar="REVISION|POD")
    _add_namespace(logs)
    logs.add_argument("-c", "--container", choices=["user-container", "queue-proxy"],
                      default="user-container")  # fmt: skip
    logs.add_argument("--all-containers", action="store_true", help="both containers")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines")
    logs.add_argument("--tail", type=int, default=200, help="lines per pod (0 = all)")

    service = add("service", "kn service: create, update, delete, list")
    service_sub = service.add_subparsers(dest="action", required=True)
    for action in ("create", "update"):
        sp = service_sub.add_parser(action, parents=[common])
        sp.add_argument("name")
        _add_namespace(sp)
        _add_kn_flags(sp)
        if action == "create":
            sp.add_argument("--force", action="store_true", help="replace an existing service")
    sp = service_sub.add_parser("delete", parents=[common])
    sp.add_argument("name")
    _add_namespace(sp)
    sp = service_sub.add_parser("list", parents=[common])
    _add_namespace(sp, all_namespaces=True)

    revision = add("revision", "kn revision list")
    revision_sub = revision.add_subparsers(dest="action", required=True)
    sp = revision_sub.add_parser("list", parents=[common])
    sp.add_argument("-s", "--service", default="", help="only this service's revisions")
    _add_namespace(sp, all_namespaces=True)

    add("version", "client and server versions")
    return p


COMMANDS = {
    "apply": _cmd_apply,
    "delete": _cmd_delete,
    "get": _cmd_get,
    "describe": _cmd_describe,
    "top": _cmd_top,
    "logs": _cmd_logs,
    "service": _cmd_service,
    "revision": _cmd_revision,
    "version": _cmd_version,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return _cmd_up(args)
        if args.command == "reset":
            return _cmd_reset(args)
        return COMMANDS[args.command](args, Client(api_address(args.api)))
    except CliError as exc:
        for message in exc.messages:
            print(f"{exc.prefix}{message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
