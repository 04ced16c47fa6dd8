"""report.json, report.html and PNG plots for a load or drill run, and the summary table."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from tools.loadlib.sampler import STATES

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / ".run" / "reports"


def new_report_dir(kind: str, base: Path | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = (base or REPORTS) / f"{kind}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = (base or REPORTS) / f"{kind}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def _mark_events(ax: Axes, events: Sequence[dict[str, Any]]) -> None:
    for event in events:
        if event.get("mark"):
            ax.axvline(float(event["t"]), color="grey", linestyle=":", linewidth=0.8)
            ax.annotate(str(event["mark"]), (float(event["t"]), 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color="dimgrey")


def _series(rows: Sequence[dict[str, Any]], get: Any) -> tuple[list[float], list[float | None]]:
    xs: list[float] = []
    ys: list[float | None] = []
    for row in rows:
        xs.append(float(row["t"]))
        try:
            value = get(row)
        except (KeyError, TypeError):
            value = None
        ys.append(None if value is None else float(value))
    return xs, ys


def _channel(ch: str, key: str, zero_is_none: bool = False) -> Any:
    def get(row: dict[str, Any]) -> float | None:
        stats = row.get("channels") or {}
        if ch not in stats:
            return None
        value = stats[ch][key]
        return None if zero_is_none and not value else float(value)

    return get


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def plot_all(out: Path, rows: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> list[str]:
    """Write the PNGs; returns their file names."""
    files: list[str] = []
    rpcs = sorted({rpc for row in rows for rpc in row["rpcs"]})
    channels = sorted({ch for row in rows if row.get("channels") for ch in row["channels"]})

    fig, ax = plt.subplots(figsize=(10, 4))
    for rpc in rpcs:
        xs, ys = _series(rows, lambda r, rpc=rpc: r["rpcs"][rpc]["rate"] if rpc in r["rpcs"] else 0)
        ax.plot(xs, _nan(ys), label=f"{rpc} calls/s")
        xs, ys = _series(rows, lambda r, rpc=rpc: sum(r["rpcs"][rpc]["errors"].values())
                         if rpc in r["rpcs"] else 0)
        if any(ys):
            ax.plot(xs, _nan(ys), linestyle="--", label=f"{rpc} errors/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls per second")
    ax.set_title("Throughput per RPC")
    ax.grid(alpha=0.3)
    _mark_events(ax, events)
    ax.legend(fontsize=8)
    files.append(_save(fig, out, "throughput.png"))

    if rpcs:
        fig, axes = plt.subplots(len(rpcs), 1, figsize=(10, 3 * len(rpcs)), squeeze=False)
        for ax, rpc in zip(axes[:, 0], rpcs, strict=True):
            for p in ("p50", "p95", "p99"):
                xs, ys = _series(rows, lambda r, rpc=rpc, p=p: r["rpcs"][rpc][p]
                                 if rpc in r["rpcs"] else None)
                ax.plot(xs, _nan(ys), label=p)
            ax.set_title(f"{rpc} latency (successful calls, from scheduled start)")
            ax.set_ylabel("ms")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            _mark_events(ax, events)
            ax.legend(fontsize=8)
        axes[-1, 0].set_xlabel("seconds")
        files.append(_save(fig, out, "latency.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for state in STATES:
        xs, ys = _series(rows, lambda r, state=state: r["orders"][state] if r.get("orders") else None)
        ax.plot(xs, _nan(ys), label=state)
    ax.set_xlabel("seconds")
    ax.set_ylabel("orders of this run")
    ax.set_title("Order states over time (withdraw_svc change feed)")
    ax.grid(alpha=0.3)
    _mark_events(ax, events)
    ax.legend(fontsize=8)
    files.append(_save(fig, out, "orders.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for ch in channels:
        xs, ys = _series(rows, _channel(ch, "backlog"))
        ax.plot(xs, _nan(ys), label=f"{ch} backlog")
        xs, ys = _series(rows, _channel(ch, "pending"))
        ax.plot(xs, _nan(ys), linestyle="--", label=f"{ch} pending")
        xs, ys = _series(rows, _channel(ch, "dead_letters"))
        if any(v for v in ys if v):
            ax.plot(xs, _nan(ys), linestyle=":", label=f"{ch} DLQ")
    ax.set_xlabel("seconds")
    ax.set_ylabel("stream entries")
    ax.set_title("Payout queue per channel (payout_svc GetChannelStats)")
    ax.grid(alpha=0.3)
    _mark_events(ax, events)
    ax.legend(fontsize=8)
    files.append(_save(fig, out, "backlog.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for i, ch in enumerate(channels):
        color = f"C{i}"
        xs, ys = _series(rows, _channel(ch, "current_rate"))
        ax.plot(xs, _nan(ys), color=color, label=f"{ch} payouts/s")
        xs, ys = _series(rows, _channel(ch, "rate_limit", zero_is_none=True))
        ax.plot(xs, _nan(ys), color=color, linestyle="--", label=f"{ch} limit")
    # Limits are often orders of magnitude above the load: linear near zero, log above.
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("seconds")
    ax.set_ylabel("gateway calls per second")
    ax.set_title("Payout rate per channel against its limit")
    ax.grid(alpha=0.3)
    _mark_events(ax, events)
    ax.legend(fontsize=8)
    files.append(_save(fig, out, "payout_rate.png"))
    return files


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def summary_table(summary: dict[str, dict[str, Any]]) -> str:
    head = (f"{'rpc':<18}{'calls':>9}{'ok':>9}{'shed%':>8}{'err%':>8}{'ok/s':>9}"
            f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    lines = [head, "-" * len(head)]

    def ms(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    for rpc, s in summary.items():
        lines.append(f"{rpc:<18}{s['calls']:>9}{s['ok']:>9}{100 * s.get('shed_rate', 0.0):>7.2f}%"
                     f"{100 * s['error_rate']:>7.2f}%{s['ok_rate']:>9.1f}"
                     f"{ms(s['p50']):>9}{ms(s['p95']):>9}{ms(s['p99']):>9}{ms(s['max']):>9}")
    for rpc, s in summary.items():
        if s["errors"]:
            codes = ", ".join(f"{code} {n}" for code, n in sorted(s["errors"].items(), key=lambda kv: -kv[1]))
            lines.append(f"  {rpc} errors: {codes}")
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any], rows: Sequence[dict[str, Any]],
                 events: Sequence[dict[str, Any]] = (), title: str = "Load test") -> dict[str, Path]:
    plots = plot_all(out, rows, events)
    body = dict(report)
    body["timeseries"] = list(rows)
    if events:
        body["timeline"] = list(events)
    body["plots"] = plots
    (out / "report.json").write_text(json.dumps(body, indent=2, sort_keys=False, default=str))
    (out / "report.html").write_text(_html(title, report, events, plots))
    return {"json": out / "report.json", "html": out / "report.html"}


def _html(title: str, report: dict[str, Any], events: Sequence[dict[str, Any]], plots: list[str]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#eee}td.l,th.l{text-align:left}pre{background:#f6f6f6;padding:1em}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
    ]
    verdict = report.get("verdict_line")
    if verdict:
        parts.append(f"<h2>{esc(str(verdict))}</h2>")
    parts.append("<h2>Run</h2><table>")
    for key, value in report.get("config", {}).items():
        parts.append(f"<tr><th class='l'>{esc(str(key))}</th><td class='l'>{esc(str(value))}</td></tr>")
    parts.append("</table>")
    summary = report.get("summary", {})
    if summary:
        parts.append("<h2>Calls</h2><p>Latency of successful calls, measured from each call's scheduled "
                     "start (open loop).</p><table><tr><th class='l'>RPC</th><th>calls</th><th>ok</th>"
                     "<th>shed</th><th>errors</th><th>ok/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
                     "<th>max ms</th></tr>")
        for rpc, s in summary.items():
            errors = ", ".join(f"{c}: {n}" for c, n in s["errors"].items()) or "0"
            parts.append(
                f"<tr><td class='l'>{esc(rpc)}</td><td>{s['calls']}</td><td>{s['ok']}</td>"
                f"<td>{s.get('shed', 0)}</td><td>{esc(errors)}</td><td>{s['ok_rate']}</td>"
                f"<td>{s['p50']}</td><td>{s['p95']}</td><td>{s['p99']}</td><td>{s['max']}</td></tr>")
        parts.append("</table>")
    for key in ("results", "drain", "channels_end", "checks"):
        if key in report:
            text = json.dumps(report[key], indent=2, default=str)
            parts.append(f"<h2>{esc(key)}</h2><pre>{esc(text)}</pre>")
    if events:
        parts.append("<h2>Timeline</h2><table><tr><th>t (s)</th><th class='l'>wall clock</th>"
                     "<th class='l'>event</th></tr>")
        for event in events:
            parts.append(f"<tr><td>{event['t']:.1f}</td><td class='l'>{esc(str(event.get('at', '')))}</td>"
                         f"<td class='l'>{esc(str(event['what']))}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for name in plots:
        parts.append(f"<p><img src='{esc(name)}' alt='{esc(name)}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
