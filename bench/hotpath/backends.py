"""The static backend and the reference proxies (nginx, haproxy): config text and start-up.

Config text comes from pure functions so it can be read and tested without starting anything.
Each nginx is its own master process with its own prefix directory, pid file and logs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.hotpath.procs import Proc, ProcGroup, free_port, have, probe_ok, wait_until

#: nginx's static answer; the built-in backend answers the same 12 bytes.
HELLO = "hello world\n"
#: Seconds a backend or reference proxy gets to answer its first probe.
READY_TIMEOUT_S = 10.0


def _nginx_main(prefix: Path) -> str:
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
"""


def _nginx_http_common(prefix: Path) -> str:
    temp = " ".join(
        f"{kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""  access_log off;
  {temp}
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
"""


def nginx_static_conf(prefix: Path, port: int) -> str:
    """1 worker, ``200 hello world``, and the Knative queue probe answered ``queue``."""
    return (
        _nginx_main(prefix)
        + "http {\n"
        + _nginx_http_common(prefix)
        + f"""  server {{
    listen 127.0.0.1:{port};
    location / {{
      if ($http_k_network_probe = "queue") {{ return 200 "queue"; }}
      return 200 "{HELLO.strip()}\\n";
    }}
  }}
}}
"""
    )


def nginx_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    """1 worker, ``proxy_pass`` with an upstream keep-alive pool: the baseline proxy."""
    return (
        _nginx_main(prefix)
        + "http {\n"
        + _nginx_http_common(prefix)
        + f"""  upstream backend {{
    server 127.0.0.1:{upstream_port};
    keepalive 128;
    keepalive_requests 1000000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    )


def haproxy_conf(port: int, upstream_port: int) -> str:
    """One thread, HTTP mode, upstream connections reused across requests."""
    return f"""global
  nbthread 1
  maxconn 20000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream_port}
"""


@dataclass(frozen=True, slots=True)
class Backend:
    kind: str  # "nginx" or "builtin"
    port: int
    proc: Proc


def _start_nginx(group: ProcGroup, name: str, conf: str, cpu: int | None) -> Proc:
    prefix = group.log_dir / name
    prefix.mkdir(parents=True, exist_ok=True)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / kind).mkdir(exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    return group.spawn(name, ["nginx", "-p", str(prefix), "-c", str(conf_path)], cpu=cpu)


def start_backend(group: ProcGroup, cpu: int | None, repo: Path) -> Backend:
    """nginx if installed, else ``python -m bench.hotpath.backend``; waits until it answers."""
    port = free_port()
    if have("nginx"):
        conf = nginx_static_conf(group.log_dir / "backend-nginx", port)
        proc = _start_nginx(group, "backend-nginx", conf, cpu)
        kind = "nginx"
    else:
        argv = [sys.executable, "-m", "bench.hotpath.backend", "--port", str(port)]
        proc = group.spawn("backend-builtin", argv, cpu=cpu, cwd=repo)
        kind = "builtin"
    hello = HELLO.strip().encode()
    if wait_until(proc, lambda: probe_ok(port, {}, hello), READY_TIMEOUT_S) is None:
        raise RuntimeError(f"{kind} backend did not become ready: {proc.log_tail()}")
    return Backend(kind, port, proc)


def start_nginx_proxy(group: ProcGroup, port: int, upstream: int, cpu: int | None) -> Proc:
    prefix = group.log_dir / "nginx-proxy"
    return _start_nginx(group, "nginx-proxy", nginx_proxy_conf(prefix, port, upstream), cpu)


def start_haproxy(group: ProcGroup, port: int, upstream: int, cpu: int | None) -> Proc:
    conf_path = group.log_dir / "haproxy.cfg"
    conf_path.write_text(haproxy_conf(port, upstream))
    return group.spawn("haproxy", ["haproxy", "-db", "-f", str(conf_path)], cpu=cpu)
