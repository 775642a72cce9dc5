"""Markdown for the issue-10 benchmarks: the full stack at scale, plumbing included, latency."""

# ruff: noqa: E501  (Markdown table rows)

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = [
    "BUDGET_PER_S",
    "feed_budget_per_s",
    "latency_section",
    "plumbing_section",
    "scale_section",
]

BUDGET_PER_S = 2000 / 60
"""Backpack's published REST limit (2000 requests/min)."""


def feed_budget_per_s() -> float:
    """The feed's own default REST rate (``FeedConfig.rest_rate_per_s``, 90% of the published
    limit): "the time the REST budget allows" for N books is N ÷ this."""
    import attrs

    from backpack_actors.config import FeedConfig

    rate = {f.name: f.default for f in attrs.fields(FeedConfig)}.get("rest_rate_per_s")
    return float(rate) if isinstance(rate, int | float) else BUDGET_PER_S


LAG_P99_TARGET_MS = 100.0
CPU_SHARE_TARGET = 1 / 3
LAG_SHARE_TARGET = 1 / 2
PLUMB_TARGETS = {1: 3.0, 4: 5.0}
SUSTAIN_LAG_MS = 250.0
SUSTAIN_SHARE = 0.95
DEFAULT_TICK_S = 0.005
"""The multiblaster's write tick when a row does not name one (older result files)."""

Target = tuple[str, str, str, str]


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "—"
    return "**met**" if ok else "**MISSED**"


def _med(values: list[float | None]) -> float:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(clean) if clean else float("nan")


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def _ok_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "failed" not in r]


def _health(runs: list[dict[str, Any]], kind: str) -> tuple[str, int]:
    """'restarts/reconnects/resyncs/degradations' (worst rep) and the worst total."""
    worst = (-1, "")
    for r in runs:
        h = r.get("health") or {}
        status = r.get("status") or {}
        if kind == "ours":
            resyncs = max(h.get("resyncs", 0), status.get("resyncing", 0))
            reconnects = max(h.get("reconnects", 0), status.get("reconnecting", 0))
            degr = max(h.get("degradations", 0), status.get("degraded_rest_only", 0))
            other = status.get("stale", 0) + status.get("consumer_overflow", 0)
            restarts = h.get("restarts", 0)
            text = f"{restarts}/{reconnects}/{resyncs}/{degr}" + (
                f" (+{other} stale/overflow)" if other else ""
            )
            total = restarts + reconnects + resyncs + degr + other
        else:
            total = h.get("restarts", 0)
            text = f"{total} errors raised by watch_*"
        if total > worst[0]:
            worst = (total, text)
    return worst[1] or "—", max(worst[0], 0)


def _cell_ready(runs: list[dict[str, Any]]) -> str:
    values = [r.get("ready_all_s") for r in runs]
    if all(v is not None for v in values) and values:
        cpu = [r["startup_cpu_s"] for r in runs if r.get("startup_cpu_s") is not None]
        # The client's CPU until then (REST snapshots and books, with the streams already on).
        return _fmt(_med(values)) + (f" (CPU {_fmt(_med(cpu))} s)" if cpu else "")
    counts = ", ".join(f"{r.get('ready_count')}/{r.get('markets')}" for r in runs)
    return f"not all ({counts})"


def _sustains(r: dict[str, Any], offered: float) -> bool:
    return (
        "failed" not in r
        and r["lag_ms"][1] < SUSTAIN_LAG_MS
        and r["events_per_s"] >= SUSTAIN_SHARE * offered
    )


def _paired(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    """ccxt.pro ÷ ours per repetition (rep i of each ran back to back), CPU and lag p99."""
    cpu, lag = [], []
    for o, x in zip(runs["ours"], runs["ccxt"], strict=False):
        if "failed" in o or "failed" in x:
            continue
        if o.get("cpu_us_per_event") and x.get("cpu_us_per_event"):
            cpu.append(_fmt(x["cpu_us_per_event"] / o["cpu_us_per_event"], 2))
        if o["lag_ms"][1]:
            lag.append(_fmt(x["lag_ms"][1] / o["lag_ms"][1], 2))
    return ", ".join(cpu) or "n/a", ", ".join(lag) or "n/a"


def scale_section(data: dict[str, Any]) -> tuple[str, str, list[Target]]:
    rows_md = []
    ratio_lines = []
    targets: list[Target] = []
    summary: dict[tuple[int, float], dict[str, Any]] = {}
    for entry in data["rows"]:
        row = entry["row"]
        n, rate, seconds = row["markets"], row["rate"], row["duration"]
        tick = row.get("tick", DEFAULT_TICK_S)
        label = f"{n} × {rate:g}/s" + (
            "" if tick == DEFAULT_TICK_S else f", {tick * 1e3:g} ms tick"
        )
        offered = n * rate
        cells: dict[str, dict[str, Any]] = {}
        for kind, name in (("ours", "**ours**"), ("ccxt", "ccxt.pro")):
            runs = entry["runs"][kind]
            ok = _ok_runs(runs)
            failed = [r["failed"] for r in runs if "failed" in r]
            health, bad = _health(ok, kind)
            c = {
                "cpu": _med([r["cpu_us_per_event"] for r in ok]),
                "core": _med([r["cpu_pct"] for r in ok]),
                "p50": _med([r["lag_ms"][0] for r in ok]),
                "p99": _med([r["lag_ms"][1] for r in ok]),
                "p99s": ", ".join(_fmt(r["lag_ms"][1]) for r in ok),
                "max": max((r["lag_ms"][2] for r in ok), default=float("nan")),
                "eps": _med([r["events_per_s"] for r in ok]),
                "rss": _med([r["rss_mib"] for r in ok]),
                "srv": _med([r["server"]["cpu_pct"] for r in ok]),
                "late": max((r["server"]["max_late_ms"] for r in ok), default=float("nan")),
                "ready": _cell_ready(ok) if ok else "n/a",
                "ready_s": [r.get("ready_all_s") for r in ok],
                "health": health,
                "bad": bad,
                "sustains": bool(ok) and all(_sustains(r, offered) for r in ok),
                "runs": len(ok),
                "failed": failed,
            }
            cells[kind] = c
            note = f" ({len(failed)} run(s) failed: {failed[0][:80]})" if failed else ""
            rows_md.append(
                f"| {label}, {seconds:g} s | {name} | {_fmt(c['eps'], 0)} |"
                f" {_fmt(c['cpu'])} | {_fmt(c['core'], 0)}% | {_fmt(c['p50'])} / {_fmt(c['p99'])}"
                f" ({c['p99s']}) /"
                f" {_fmt(c['max'], 0)} | {c['ready']} | {_fmt(c['rss'], 0)} | {health}{note} |"
                f" {_fmt(c['srv'], 0)}% (late ≤ {_fmt(c['late'], 0)} ms) |"
            )
        o, x = cells["ours"], cells["ccxt"]
        paired_cpu, paired_lag = _paired(entry["runs"])
        ratio_lines.append(
            f"| {label} | {_fmt(x['cpu'] / o['cpu'], 2)}× ({paired_cpu}) |"
            f" {_fmt(x['p99'] / o['p99'], 2)}× ({paired_lag}) | {'yes' if o['sustains'] else 'no'} |"
            f" {'yes' if x['sustains'] else 'no'} |"
        )
        cells["label"] = {"text": label}
        summary[(n, rate, tick)] = cells
    budget = feed_budget_per_s()
    config = "symbols=…, rest_url=…, ws_url=…, snapshot_interval=0"
    if data.get("group_supported"):
        config += f", connection_group_size={data['group']}"
    else:
        config += "` (no `connection_group_size` in this library: one connection per market)`"
    body = f"""
Each row: a fresh `benchmarks/multiblaster.py` (own process) with N markets, each sending R
frames/s (85% depth deltas with 1–5 level changes, 15% trades; `E` = `T` = the frame's due
wall-clock time; REST depth snapshots consistent with the stream), then one client process.
ours = `open_feed(FeedConfig.from_kwargs({config}))` consuming
`feed.batches()`; ccxt.pro = `watch_order_book` + `watch_trades` per market, all concurrent on one
asyncio loop (one connection, its defaults). Runs alternate ours/ccxt.pro, order flipped each rep;
medians of {data["reps"]} reps (lag max and health: worst rep).

CPU per event = process user+sys (`getrusage`) over the steady window ÷ deltas and trades
delivered in it; the steady window starts 2 s after every book is ready (at half the run if they
are not all ready by then). Lag = delivery to the consumer − `T`. Books ready = from just before `open_feed` /
`load_markets` until the last market's first book (the floor is the REST budget: ours spends
{budget:g} requests/s by default, 90% of Backpack's published {BUDGET_PER_S * 60:.0f} requests/min, so
N books take N ÷ {budget:g}/s less its burst; *CPU* = the client's CPU until then). Health (ours) = restarts / reconnects / resyncs / REST-only degradations from
`statistics()` or the status events the consumer saw, whichever is larger. Server CPU = the
multiblaster's CPU over the client's run (% of one core); *late* = the worst time a write went out
after its first frame was due.

| row | client | events/s | CPU µs/event | CPU (core) | lag p50 / p99 (each rep) / max ms | all books ready s | peak RSS MiB | restarts/reconnects/resyncs/degradations | server CPU |
|---|---|---:|---:|---:|---:|---:|---:|---|---:|
{chr(10).join(rows_md)}

| row | ccxt.pro CPU/event ÷ ours (paired per rep) | ccxt.pro lag p99 ÷ ours (paired per rep) | ours sustains | ccxt.pro sustains |
|---|---:|---:|---|---|
{chr(10).join(ratio_lines)}

*Sustains* = every rep delivered ≥ {100 * SUSTAIN_SHARE:g}% of the offered events/s with lag p99
< {SUSTAIN_LAG_MS:g} ms.
"""
    big = summary.get((1000, 20.0, DEFAULT_TICK_S)) or summary.get(
        max(summary, default=(0, 0.0, DEFAULT_TICK_S))
    )
    big_key = next((k for k, v in summary.items() if v is big), None)
    if big is not None and big_key is not None:
        o = big["ours"]
        n = big_key[0]
        targets.append(
            (
                f"{n} × {big_key[1]:g}/s: restarts/resyncs/degradations",
                "0",
                o["health"],
                _verdict(o["runs"] > 0 and o["bad"] == 0 and not o["failed"]),
            )
        )
        targets.append(
            (
                f"{n} × {big_key[1]:g}/s: lag p99",
                f"< {LAG_P99_TARGET_MS:g} ms",
                f"{_fmt(o['p99'])} ms",
                _verdict(o["p99"] < LAG_P99_TARGET_MS if o["p99"] == o["p99"] else False),
            )
        )
        limit = n / budget + 2
        ready = [v for v in o["ready_s"] if v is not None]
        targets.append(
            (
                f"{n} × {big_key[1]:g}/s: every book ready",
                f"≤ N ÷ {budget:g}/s (the feed's REST budget) + 2 s = {limit:.1f} s",
                o["ready"],
                _verdict(len(ready) == o["runs"] and o["runs"] > 0 and max(ready) <= limit),
            )
        )
    sustained = [k for k, v in summary.items() if v["ccxt"]["sustains"] and k[1] == 20.0]
    largest = max((k[0] for k in sustained), default=None)
    # Every server tick of the largest sustained N is a row of its own: each gets its verdict.
    for key in sorted(k for k in sustained if k[0] == largest):
        o, x = summary[key]["ours"], summary[key]["ccxt"]
        where = summary[key]["label"]["text"]
        share_cpu = o["cpu"] / x["cpu"]
        share_lag = o["p99"] / x["p99"]
        targets.append(
            (
                f"CPU vs ccxt.pro at the largest N it sustains ({where})",
                f"≤ {CPU_SHARE_TARGET:.2f}× its CPU",
                f"{share_cpu:.2f}×",
                _verdict(share_cpu <= CPU_SHARE_TARGET),
            )
        )
        targets.append(
            (
                f"lag p99 vs ccxt.pro at the largest N it sustains ({where})",
                f"≤ {LAG_SHARE_TARGET:.2f}× its lag p99",
                f"{share_lag:.2f}×",
                _verdict(share_lag <= LAG_SHARE_TARGET),
            )
        )
    return "Full stack over real sockets: N markets × R msg/s (issue 10)", body, targets


def latency_section(data: dict[str, Any]) -> tuple[str, str] | None:
    """Receipt → consumer at the fixed load row (50 × 20/s), from the scale runs."""
    entry = next(
        (e for e in data["rows"] if e["row"]["markets"] == 50 and e["row"]["rate"] == 20), None
    )
    if entry is None:
        return None
    lines = []
    for kind, name in (
        ("ours", "**ours** (`received_at` → `feed.batches()`)"),
        ("ccxt", "ccxt.pro (aiohttp hands the message to ccxt → `watch_*` returns)"),
    ):
        ok = _ok_runs(entry["runs"][kind])
        if not ok:
            lines.append(f"| {name} | failed | | | |")
            continue
        lat = [r["lat_us"] for r in ok]
        lines.append(
            f"| {name} | {_fmt(_med([v[0] for v in lat]), 0)} | {_fmt(_med([v[1] for v in lat]), 0)}"
            f" | {_fmt(_med([v[2] for v in lat]), 0)} | {sum(r['samples'] for r in ok):,} |"
        )
    body = f"""
The 50 × 20/s row above (1,000 events/s over one process, {entry["row"]["duration"]:g} s per
run, steady window only), receipt of the socket read → the consumer holding the event; medians of
the reps' percentiles.

| client | p50 µs | p99 µs | p99.9 µs | samples |
|---|---:|---:|---:|---:|
{chr(10).join(lines)}
"""
    return "Latency receipt → consumer at a fixed load (50 markets × 20 msg/s)", body


def plumbing_section(data: dict[str, Any]) -> tuple[str, str, list[Target]]:
    rows = []
    targets: list[Target] = []
    for r in data["rows"]:
        instr = (
            f"{r['ours_instr'] / 1e3:,.1f}k | {r['ccxt_instr'] / 1e3:,.1f}k | **{r['instr_ratio']:.2f}×**"
            if "instr_ratio" in r
            else "n/a | n/a | n/a"
        )
        paired = ", ".join(f"{x:.2f}" for x in r["ratios"])
        rows.append(
            f"| {r['k']} | {r['ours_us']:.1f} | {r['ccxt_us']:.1f} | {paired} | {r['ratio']:.2f}× |"
            f" {r['ours_cpu_us']:.1f} | {r['ccxt_cpu_us']:.1f} | {instr} |"
        )
        goal = PLUMB_TARGETS.get(r["k"])
        if goal is not None:
            have = r.get("instr_ratio")
            targets.append(
                (
                    f"with plumbing, {r['k']} frame(s) per read, by instructions",
                    f"≥ {goal:g}× ccxt.pro",
                    f"{have:.2f}×" if have is not None else "not measured",
                    _verdict(have >= goal) if have is not None else "—",
                )
            )
    errors = data.get("callgrind_errors")
    note = f"\n\ncallgrind did not finish: {'; '.join(errors)}" if errors else ""
    body = f"""
Each library in its own process with its real plumbing, over real loopback TCP to a server thread
in that process (`benchmarks/plumbing.py`): ours = `open_feed` → our WebSocket reader → core →
a consumer on `feed.batches()`; ccxt.pro = aiohttp's reader → `handle_message` → resolved futures
→ consumers awaiting `watch_order_book` / `watch_trades`. The same seeded stream (85% deltas, 15%
trades), written in a closed loop: the next block of k frames is sent only when the consumer has
every frame of the previous one, so every socket read returns exactly k frames and the full path
read → consumer is paid per read. {data["frames"]:,} frames per k per rep, {data["reps"]} reps,
ours and ccxt.pro alternating (order flipped each rep). µs are per frame; *paired* = ccxt.pro ÷
ours wall in the same rep. Instructions: one run per library under `valgrind --tool=callgrind`
({data.get("cg_frames", 0):,} frames per k, a dump per phase so start-up and warm-up are excluded);
these do not move with load — **the instruction ratio is the one to quote**.

| frames per read | ours wall µs | ccxt.pro wall µs | paired ratios | median | ours CPU µs | ccxt.pro CPU µs | ours instr/frame | ccxt.pro instr/frame | by instructions |
|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}{note}
"""
    return "Hot path like for like, with each library's event-loop plumbing", body, targets
