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
from typing import Any, NoReturn

from activator.model import DEFAULT_DOMAIN
from serving import kubeprint, render
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

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as resp:
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
    from serving.up import serve

    try:
        settings = UpSettings(
            state_dir=Path(args.state_dir).expanduser() if args.state_dir else default_state_dir(),
            port=args.port,
            host=args.host,
            api=api_address(args.api),
            domain=args.domain,
            autoscaler=autoscaler_from_flags(args.autoscaler),
            queue_proxy_argv=queue_proxy_argv(),
        )
    except ValueError as exc:
        raise CliError([str(exc)]) from None
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(lambda: serve(settings, args.paths))


def _cmd_apply(args: argparse.Namespace, client: Client) -> int:
    result = client.call("POST", "/api/v1/apply", {"documents": read_documents(args.filename)})
    print("\n".join(result["messages"]))
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
    query = f"?tail={args.tail}" + ("&queue=1" if args.queue_proxy else "")
    sys.stdout.write(client.call("GET", f"/api/v1/logs/{args.revision}{query}"))
    return 0


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
    up.add_argument("-v", "--verbose", action="store_true", help="log activator details")

    apply = add("apply", "apply Knative Service manifests")
    apply.add_argument("-f", "--filename", action="append", required=True,
                       help="file, directory or - for stdin (repeatable)")  # fmt: skip

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

    logs = add("logs", "logs of a revision's pods")
    logs.add_argument("revision")
    logs.add_argument("--tail", type=int, default=200, help="lines per pod (0 = all)")
    logs.add_argument("--queue-proxy", action="store_true", help="include queue-proxy logs")
    return p


COMMANDS = {
    "apply": _cmd_apply,
    "delete": _cmd_delete,
    "get": _cmd_get,
    "describe": _cmd_describe,
    "top": _cmd_top,
    "logs": _cmd_logs,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return _cmd_up(args)
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
