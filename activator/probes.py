"""Answers to kubelet and network probes, before any routing (reference §2.2, steps 1-3).

Pure: ``answer_probe`` looks at the few header values that matter and returns the answer, or
None when the request is not a probe and goes on to routing. Order, outermost first:

1. kubelet (``User-Agent: kube-probe/...`` or a non-empty ``K-Kubelet-Probe``): 200 empty,
   or 500 with the health error (``received SIGTERM from kubelet``) plus a newline;
2. ``K-Network-Probe: probe``: needs ``K-Network-Hash`` (400 otherwise), 200 echoing it;
3. ``K-Network-Probe: activator``: 200 ``activator`` (still after SIGTERM); any other
   non-empty value: 400 ``unexpected probe header value: "<html-escaped value>"``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIGTERM_ERROR", "ProbeAnswer", "answer_probe", "go_html_escape"]

SIGTERM_ERROR = "received SIGTERM from kubelet"
_HASH_MISSING = b'a probe request must contain a non-empty "K-Network-Hash" header\n'

_GO_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;"}


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()


def go_html_escape(text: str) -> str:
    """Go's ``html.EscapeString``: ``<>&'"`` become entities (``'`` → ``&#39;``)."""
    return "".join(_GO_HTML.get(ch, ch) for ch in text)


def answer_probe(
    user_agent: bytes | None,
    kubelet_probe: bytes | None,
    network_probe: bytes | None,
    network_hash: bytes | None,
    health_error: str | None,
) -> ProbeAnswer | None:
    """The answer to a probe, or None for an ordinary request. See the module docstring."""
    if (user_agent is not None and user_agent.startswith(b"kube-probe/")) or kubelet_probe:
        if health_error is not None:
            return ProbeAnswer(500, (health_error + "\n").encode())
        return ProbeAnswer(200)
    if not network_probe:
        return None
    if network_probe == b"probe":
        if not network_hash:
            return ProbeAnswer(400, _HASH_MISSING)
        return ProbeAnswer(200, b"", ((b"K-Network-Hash", network_hash),))
    if network_probe == b"activator":
        return ProbeAnswer(200, b"activator")
    value = go_html_escape(network_probe.decode("latin-1"))
    return ProbeAnswer(400, f'unexpected probe header value: "{value}"\n'.encode())
