"""Text rendering of the API's JSON for the ``sluice`` CLI: tables in kubectl's style."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by three spaces, like ``kubectl get``."""
    cells = [list(headers), *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def services(items: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"],
        [
            [s["name"], s["url"], s["latestCreated"], s["latestReady"], s["ready"], s["reason"]]
            for s in items
        ],
    )


def revisions(items: Sequence[Mapping[str, Any]]) -> str:
    return table(
        [
            "NAME",
            "SERVICE",
            "TRAFFIC",
            "TAGS",
            "GENERATION",
            "READY",
            "DESIRED",
            "ACTUAL",
            "REASON",
        ],
        [
            [
                r["name"],
                r["service"],
                f"{r['traffic']}%" if r["traffic"] or r["tags"] else "",
                ",".join(r["tags"]),
                r["generation"],
                r["ready"],
                r["desired"],
                r["actual"],
                ": ".join(x for x in (r.get("condition", ""), r["reason"]) if x),
            ]
            for r in items
        ],
    )


def routes(items: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["NAME", "URL", "READY", "TRAFFIC"],
        [
            [
                r["name"],
                r["url"],
                r["ready"],
                ",".join(
                    f"{t['percent']}% -> {t['revision']}"
                    + (f" (tag {t['tag']})" if t["tag"] else "")
                    for t in r["traffic"]
                ),
            ]
            for r in items
        ],
    )


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def describe(d: Mapping[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    out = [
        f"Name:       {d['name']}",
        f"Namespace:  {d['namespace']}",
        f"URL:        {d['url']}",
        "",
        "Revisions:",
    ]
    traffic_rows = [
        [f"{t['percent']}%", t["revision"], t["tag"] or "", t["url"]] for t in d["traffic"]
    ]
    out.append(_indent(table(["PERCENT", "REVISION", "TAG", "URL"], traffic_rows)))
    out += ["", "Pods:"]
    pod_rows = [
        [r["name"], p["name"], p["phase"], p["restarts"], p["endpoint"], p["reason"]]
        for r in d["revisions"]
        for p in r["pods"]
    ]
    out.append(
        _indent(table(["REVISION", "POD", "PHASE", "RESTARTS", "QUEUE-PROXY", "REASON"], pod_rows))
        if pod_rows
        else "  (none)"
    )
    out += ["", "Conditions:"]
    out.append(
        _indent(
            table(
                ["TYPE", "STATUS", "REASON", "MESSAGE"],
                [[c["type"], c["status"], c["reason"], c["message"]] for c in d["conditions"]],
            )
        )
    )
    out += ["", "Events:"]
    event_rows = [
        [_age(now - e["time"]), e["type"], e["reason"], e["object"], e["message"]]
        for e in d["events"]
    ]
    out.append(
        _indent(table(["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], event_rows))
        if event_rows
        else "  (none)"
    )
    cold = d.get("coldStarts") or {}
    if cold:
        out += ["", "Cold starts (ms):"]
        for revision, summary in cold.items():
            out.append(
                f"  {revision}: {summary['count']} kept, total p50 {summary['totalP50Ms']:.1f}, "
                f"p95 {summary['totalP95Ms']:.1f}"
            )
            phases = summary["phases"]
            rows = [[name, f"{v['p50']:.1f}", f"{v['p95']:.1f}"] for name, v in phases.items()]
            out.append(_indent(_indent(table(["PHASE", "P50", "P95"], rows))))
            last_rows = [
                [_age(now - b["at"]), f"{b['totalMs']:.1f}"]
                + [f"{b['phases'].get(name, 0):.1f}" for name in phases]
                for b in reversed(summary["last"])
            ]
            heads = ["AGE", "TOTAL", *(name.upper() for name in phases)]
            out.append(_indent(_indent(table(heads, last_rows))))
    return "\n".join(out)


def top(data: Mapping[str, Any]) -> str:
    rows = [
        [
            r["namespace"] + "/" + r["name"],
            f"{r['traffic']}%",
            r["rps"],
            r["concurrency"],
            f"{r['readyPods']}/{r['actual']}/{r['desired']}",
            r["queue"],
            _cold(r),
        ]
        for r in data["revisions"]
    ]
    header = time.strftime(
        "sluice top  %H:%M:%S  (pods: ready/actual/desired; cold starts: count p50/p95 ms)"
    )
    heads = ["REVISION", "TRAFFIC", "RPS", "CONCURRENCY", "PODS", "QUEUE", "COLD STARTS"]
    body = table(heads, rows)
    return header + "\n" + body


def _cold(row: Mapping[str, Any]) -> str:
    count = row.get("coldStarts") or 0
    if not count:
        return "-"
    return f"{count} {row['coldP50Ms']:.0f}/{row['coldP95Ms']:.0f}"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
