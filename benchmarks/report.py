"""Collects the benchmark results as Markdown sections and renders BENCHMARKS.md."""

from __future__ import annotations

import datetime
import statistics
from typing import Any

from benchmarks.generator import Workload

__all__ = ["Report"]

HOT_TARGET = 8.0
E2E_TARGET = 1.5
P99_TARGET_US = 15.0
RSS_TARGET_PCT = 10.0


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


class Report:
    """Sections in run order plus a targets summary."""

    def __init__(self, facts: dict[str, str], *, quick: bool) -> None:
        self.facts = facts
        self.quick = quick
        self.sections: list[tuple[str, str]] = []
        self.targets: list[tuple[str, str, str, str]] = []
        # Issue-10 sections and targets: what a user gets; rendered before everything else.
        self.front: list[tuple[str, str]] = []
        self.targets10: list[tuple[str, str, str, str]] = []
        self.notes: list[str] = []
        self.seconds = 0.0
        self.date: datetime.datetime | None = None

    # -- sections ----------------------------------------------------------------------------

    def section(self, title: str, body: str) -> None:
        self.sections.append((title, body.strip() + "\n"))

    def target(self, name: str, goal: str, measured: str, verdict: str) -> None:
        self.targets.append((name, goal, measured, verdict))

    def front_section(
        self, title: str, body: str, targets: list[tuple[str, str, str, str]] | None = None
    ) -> None:
        self.front.append((title, body.strip() + "\n"))
        self.targets10.extend(targets or [])

    def last_front(self) -> str:
        title, body = self.front[-1]
        return f"\n## {title}\n\n{body}"

    def last_section(self) -> str:
        title, body = self.sections[-1]
        return f"\n## {title}\n\n{body}"

    def workload(self, workload: Workload, seconds: float) -> None:
        t = workload.truth
        depth = t.depth_frames
        self.section(
            "Workload",
            f"""
Seeded generator (`benchmarks/generator.py`, seed in the command): one `{workload.symbol}` REST
depth snapshot ({len(t.bids) + len(t.asks)} levels at the end; ~500 a side at the start, tick 0.01,
step 0.0001), then **{t.frames:,} frames** as the exchange sends them (compact JSON, sorted keys,
strings for prices/sizes, `"0.00000"` removals):
{depth:,} depth deltas ({100 * depth / t.frames:.1f}%) with {t.level_changes / depth:.2f} level
changes on average, `u > U` on {100 * t.merged_deltas / depth:.1f}% of them, {t.absent_removals:,}
removals of absent levels; {t.trade_frames:,} trades ({100 * t.trade_frames / t.frames:.1f}%).
Mean frame {t.frame_bytes / t.frames:.0f} bytes. Generated in {seconds:.1f} s with an exact
ground-truth book; every path's final book is checked against it (a wrong answer fails the run).
""",
        )

    def hot_path(self, us: dict[str, float], reps: dict[str, int]) -> None:
        ccxt = us["ccxt"]

        def row(label: str, key: str) -> str:
            return f"| {label} | {1e3 / us[key]:,.0f}k | {us[key]:.2f} | {ccxt / us[key]:.1f}× |"

        ratio = ccxt / us["ours"]
        residual = us["ours"] - us["decode"] - us["rec_queue"]
        parts = [
            ("decode: `decode_read` (typed decode, text kept)", us["decode"]),
            ("`OrderBook.apply` (deltas only)", us["apply"]),
            (
                "`BookSync.on_delta_fast` + `TradeSync.accept_in_order` beyond apply",
                us["sync"] - us["apply"],
            ),
            (
                "`Reconciler` dispatch + event construction (`BookDelta`/`Trade`)",
                us["rec_none"] - us["sync"],
            ),
            (
                "`Emitter.publish` → `Subscription.offer_many` + consumer `get_batch_nowait`",
                us["rec_queue"] - us["rec_none"],
            ),
            ("per-read calls (`on_frames`, `time.time`) and noise", residual),
        ]
        stages = "\n".join(
            f"| {label} | {value:.2f} | {100 * value / us['ours']:.0f}% |" for label, value in parts
        )
        ours_label = (
            "**ours**: decode → `Reconciler.on_frames` (gap check, book, event) → `Emitter` → "
            "`Subscription` → consumer reading a list per call (`feed.batches()`), 64 frames a read"
        )
        n = max(reps.values())
        self.section(
            "Core only (no event loop, 64 frames per read): frame text in → event out, one core",
            f"""
Medians of {n} interleaved repetitions (the order rotates each repetition).

| path | frames/s | µs/frame | vs ccxt.pro |
|---|---:|---:|---:|
{row("**floor**: msgspec typed decode only (strings left as str)", "floor")}
{row("our decoder alone: `decode_read` (typed decode, prices kept as text)", "decode")}
{row("**ccxt.pro `backpack`**: `Client.handle_message` (JSON parse, book, resolve)", "ccxt")}
{row(ours_label, "ours")}
{row("ours, consumer reading one event per call (`async for event in feed`)", "ours_each")}
{row("ours, one frame per read, one event per call (worst case)", "ours_b1")}

Ours is **{ratio:.1f}× ccxt.pro** (target ≥ {HOT_TARGET:g}×: {_verdict(ratio >= HOT_TARGET)}) and
{us["ours"] / us["floor"]:.1f}× the decode floor's time. Every path ended on the ground-truth book;
ours also delivered exactly one `BookDelta` per depth frame and one `Trade` per trade frame, the
last carrying the last update id and trade id, with no gap, resync or conflation.

### Where our time goes (µs per stream frame, medians, same run)

| stage | µs/frame | share |
|---|---:|---:|
{stages}
| **ours, measured end to end** | **{us["ours"]:.2f}** | 100% |

Stages after decode run on pre-decoded frames through the same objects (each checked against the
ground truth too); the differences between cumulative stages attribute the cost.
""",
        )
        self.target(
            "hot path vs ccxt.pro",
            f"≥ {HOT_TARGET:g}×",
            f"{ratio:.1f}× ({1e3 / us['ours']:,.0f}k vs {1e3 / ccxt:,.0f}k frames/s)",
            _verdict(ratio >= HOT_TARGET),
        )

    def latency(self, ours: list[float], ccxt: list[float]) -> None:
        self.section(
            "Per-frame latency of the hot path",
            f"""
A separate pass over the same frames, `time.perf_counter_ns` around each frame's processing. Ours:
decode → one-frame `Reconciler.on_frames` → `Emitter` → `Subscription` → consumer drained (one
frame per read, so per-read overhead is included in every frame). ccxt.pro: `Client.handle_message`.
GC stays enabled; p99.9 shows collector pauses.

| path | p50 µs | p99 µs | p99.9 µs |
|---|---:|---:|---:|
| ours | {ours[0]:.1f} | {ours[1]:.1f} | {ours[2]:.1f} |
| ccxt.pro | {ccxt[0]:.1f} | {ccxt[1]:.1f} | {ccxt[2]:.1f} |
""",
        )
        self.target(
            "hot-path p99 latency",
            f"≤ {P99_TARGET_US:g} µs",
            f"{ours[1]:.1f} µs (p50 {ours[0]:.1f}, p99.9 {ours[2]:.1f})",
            _verdict(ours[1] <= P99_TARGET_US),
        )

    def profile(self, frames: int, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        self.section(
            "Profile of our hot path (cProfile, sorted by own time)",
            f"""
{frames:,} frames through `ours` (64 frames a read) under cProfile (which inflates per-call costs;
use the stage table above for proportions):

```
{chr(10).join(lines)}
```
""",
        )

    def memory(self, result: dict[str, Any]) -> None:
        rows = "\n".join(
            f"| {label} | {done:,} | {kib / 1024:.1f} |" for label, done, kib in result["marks"]
        )
        flat = result["flatness_pct"]
        self.section(
            "Memory: RSS with a slow consumer",
            f"""
{result["frames"]:,} frames through our path (own process, frames generated lazily):
`Reconciler.on_frames` publishing through the `Emitter` into one `Subscription` of capacity
{result["capacity"]} under the default policy (books conflate past half the bound, trades past the
bound are dropped and reported in-band; nothing waits), read by a consumer that takes one event per
scheduling round while the producer handles 64 frames per round. The consumer rebuilds the book from
what it receives and ended on the ground-truth book (after its last conflated snapshot and the
deltas after it); {result["conflated"]:,} book events were conflated into
{result.get("conflated_snapshots", result["snapshots"]):,} snapshots. It received
{result["trades"]:,} of {result.get("trade_frames", result["trades"]):,} trades in id order; the
{result.get("dropped_trades", 0):,} dropped were announced by
{result.get("overflow_reports", 0):,} `consumer_overflow` status events before the next trade it
received (received + reported = every trade). The queue peaked at {result["max_depth"]} entries.
{result["seconds"]:.1f} s.

| point | frames | RSS MiB |
|---|---:|---:|
{rows}

RSS spread from the first quarter to the end: **{flat:.1f}%** (end vs first quarter
{result["end_vs_q1_pct"]:+.1f}%).
""",
        )
        self.target(
            "RSS flat over ≥ 1M frames",
            f"within ±{RSS_TARGET_PCT:g}%",
            f"{flat:.1f}% spread over {result['frames']:,} frames",
            _verdict(flat <= RSS_TARGET_PCT and result["frames"] >= 1_000_000)
            if result["frames"] >= 1_000_000
            else f"{_verdict(flat <= RSS_TARGET_PCT)} (quick run: fewer frames)",
        )

    def memory_failed(self, lines: list[str]) -> None:
        body = "\n".join(lines)
        self.section("Memory: RSS with a slow consumer", f"**FAILED**:\n\n```\n{body}\n```")
        self.target("RSS flat over ≥ 1M frames", f"within ±{RSS_TARGET_PCT:g}%", "failed", "—")

    def e2e_skipped(self, reason: str) -> None:
        self.section("End to end over loopback, and startup", f"Not measured: {reason}.")
        self.target("end-to-end vs ccxt.pro", f"≥ {E2E_TARGET:g}×", "not measured", "—")
        self.target("first book ready", "≤ one snapshot round-trip", "not measured", "—")

    def e2e(self, data: dict[str, Any]) -> None:
        """The loopback sections: sustained-rate ladder, latency at a fixed load, startup."""
        cfg = data["cfg"]
        ceiling = data["ceiling"]
        best, ratio = data["best"], data["ratio"]
        names = {"ours": "ours (`open_feed`)", "ccxt": "ccxt.pro"}

        def cell(result: dict[str, Any]) -> str:
            lag = result.get("lag_ms", [float("nan")] * 3)
            cpu = 1e6 * result.get("cpu_s", 0.0) / max(result.get("frames", 1), 1)
            if result["ok"]:
                return f"✓ lag p99 {lag[1]:.0f} ms, {cpu:.0f} µs CPU/frame"
            why = "lag" if result.get("complete") else "incomplete"
            detail = "; ".join(result.get("problems", []))[:90].replace("|", "/")
            detail = f" ({detail})" if detail else ""
            return f"✗ {why}: lag p99 {lag[1]:,.0f} ms, max {lag[2]:,.0f} ms{detail}"

        rates = sorted({rate for rate, _k, _a, _r in data["ladder"]})
        rows = []
        for rate in rates:
            cells = []
            for kind in ("ours", "ccxt"):
                runs = [r for rr, k, _a, r in data["ladder"] if rr == rate and k == kind]
                cells.append("<br>".join(cell(r) for r in runs) if runs else "—")
            slips = [
                r.get("server", {}).get("max_slip_ms", 0.0)
                for rr, _k, _a, r in data["ladder"]
                if rr == rate
            ]
            rows.append(f"| {rate:,} | {cells[0]} | {cells[1]} | {max(slips, default=0.0):,.0f} |")
        ladder = "\n".join(rows)

        def med(kind: str, key: str, index: int | None = None) -> float:
            values = [
                (r[key][index] if index is not None else r[key])
                for r in data["latency"][kind]
                if r.get("ok")
            ]
            return statistics.median(values) if values else float("nan")

        lat_rows = "\n".join(
            f"| {names[kind]} | {med(kind, 'lat_us', 0):,.0f} | {med(kind, 'lat_us', 1):,.0f}"
            f" | {med(kind, 'lat_us', 2):,.0f} | {med(kind, 'lag_ms', 0):.1f} /"
            f" {med(kind, 'lag_ms', 1):.1f} | {med(kind, 'ready_ms'):.0f} |"
            for kind in ("ours", "ccxt")
        )
        lat_failed = [
            f"{kind}: {r['problems']}"
            for kind in ("ours", "ccxt")
            for r in data["latency"][kind]
            if not r.get("ok")
        ]
        failed_note = (
            "\n\nRuns that failed their checks (not in the medians): " + "; ".join(lat_failed)
            if lat_failed
            else ""
        )
        reps = len(data["latency"]["ours"])
        rtt = data["rtt_s"]
        failed_at = data["failed_at"]

        def reached(kind: str) -> str:
            top = f"{best[kind]:,} frames/s"
            if kind in failed_at:
                return f"{top} (failed at {failed_at[kind]:,})"
            return f"{top} (passed every offered rate)"

        self.section(
            "End to end over loopback: sustained zero-loss rate",
            f"""
A local WebSocket server (`benchmarks/blaster.py`, its own process, trio + wsproto handshake,
pre-encoded frames) replays the seeded stream of this report's generator (`BTC_USDC` depth deltas +
trades) from its start on every connection and serves the REST routes both clients call at startup
(the depth snapshot is the stream's initial book, `lastUpdateId` = first `U` − 1). `E` of each frame
is rewritten to the wall-clock time it was *due*, so a client that falls behind (and fills the
socket) shows it as lag. Each client runs in its own long-lived worker process and connects afresh
per run: {cfg.warm:,} warm-up frames at ≤ 4,000/s, then the offered rate for
≥ {cfg.step_seconds:g} s (frames rounded up to 10,000; at most {cfg.max_step_frames:,} a run), one
server write per {1e3 * cfg.tick:g} ms of frames. The server alone reaches
**{ceiling["frames_per_s"] / 1e3:,.0f}k frames/s** ({ceiling["frames"]:,} frames to a bare socket
reader in {1e3 * ceiling["seconds"]:.0f} ms), far above either client.

A run passes when **nothing is lost** and **lag p99 < 250 ms** (lag = delivery to the consumer −
`E`, frames after the warm-up): ours (`open_feed`, `snapshot_interval=0`, consumer `async for`) must
deliver every `BookDelta` contiguously after its first `BookSnapshot` and every trade id in order,
with no other status event, no conflation/drop/gap/resync in `statistics()`; ccxt.pro
(`watch_order_book` + `watch_trades` concurrently, `snapshotDelay` 0) must hand every frame to
`handle_message`, deliver every trade id in order through `watch_trades` and end at the last `u`.
Both must end on the ground-truth book (a wrong book fails the whole benchmark) and deliver the
last frame within 1 s of its due time. Rates are climbed in order, alternating which client goes
first; a client stops after {cfg.attempts} failed attempt(s) at a rate, then the gap between its
highest pass and that rate is bisected {cfg.refine} time(s) (to 500 frames/s). CPU/frame is the
client process's `time.process_time` over the run divided by frames (includes startup). "server
slip" is how late the server's last write of a block went out (it grows only when a client stops
reading).

| offered frames/s | ours (`open_feed`) | ccxt.pro | server slip ms |
|---:|---|---|---:|
{ladder}

Highest sustained rate: ours **{reached("ours")}**, ccxt.pro **{reached("ccxt")}** →
**{ratio:.2f}×** (target ≥ {E2E_TARGET:g}×: {_verdict(ratio >= E2E_TARGET)}).
""",
        )
        self.target(
            "end-to-end vs ccxt.pro",
            f"≥ {E2E_TARGET:g}×",
            f"{ratio:.2f}× sustained zero-loss rate, lag p99 < 250 ms "
            f"({best['ours'] / 1e3:g}k vs {best['ccxt'] / 1e3:g}k frames/s)",
            _verdict(ratio >= E2E_TARGET),
        )
        profile = data.get("profile")
        if profile is not None:
            rows_text, text, rate = profile
            self.section(
                "Profile of our client at saturation (cProfile)",
                f"""
Our worker under cProfile while offered {rate:,} frames/s (the first rate it failed; run whatever
the ratio), from
`open_feed` entered to the end of the run (cProfile inflates per-call costs, so the absolute rate is
lower; use it for proportions). Own time summed by layer:

| layer | own ms | share |
|---|---:|---:|
{rows_text}

```
{text}
```
""",
            )
        ours_ready = med("ours", "ready_ms")
        self.section(
            "End-to-end latency and startup at a fixed load",
            f"""
{cfg.latency_rate:,} frames/s offered (a write per ~1 ms, i.e. one or two frames per write, as
a real feed arrives), {cfg.latency_seconds:g} s after the warm-up, {reps} interleaved run(s) per
client, medians of the per-run percentiles. **Added latency** = delivery to the consumer − receipt:
ours from `received_at` (stamped when the socket read completes, before WebSocket parsing) to the
consumer's `time.time()` on the event; ccxt.pro from aiohttp handing the message to ccxt's client
(WebSocket parsing already done, before its JSON parse) to the `watch_*` call returning with it (a
book frame counts as delivered when `watch_order_book` returns a nonce ≥ its `u`). Lag includes
the server's own pacing (up to a write period). Startup: ours `open_feed` entered (markets loaded)
→ first `BookSnapshot`; ccxt.pro `load_markets` done → first `watch_order_book` result. One REST
depth round-trip against the same server: **{1e3 * rtt:.1f} ms**.

| client | added latency p50 µs | p99 µs | p99.9 µs | lag p50 / p99 ms | subscribe → first book ms |
|---|---:|---:|---:|---:|---:|
{lat_rows}{failed_note}
""",
        )
        self.target(
            "first book ready",
            "≤ one snapshot round-trip after the subscription "
            "(checked: ≤ 2 RTT + 10 ms from connect)",
            f"{ours_ready:.0f} ms after subscribe (REST round-trip {1e3 * rtt:.1f} ms; "
            f"ccxt.pro {med('ccxt', 'ready_ms'):.0f} ms)",
            _verdict(ours_ready <= 2e3 * rtt + 10),
        )

    # -- whole report ------------------------------------------------------------------------

    def finish(self, seconds: float, date: datetime.datetime) -> None:
        self.seconds = seconds
        self.date = date

    def summary(self) -> str:
        return self._table(self.targets)

    def summary10(self) -> str:
        return self._table(self.targets10)

    @staticmethod
    def _table(targets: list[tuple[str, str, str, str]]) -> str:
        rows = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets)
        return f"| target | goal | measured | |\n|---|---|---|---|\n{rows}\n"

    def markdown(self) -> str:
        facts = self.facts
        date = self.date.strftime("%Y-%m-%d %H:%M UTC") if self.date else "unknown"
        body = "\n".join(f"## {title}\n\n{text}" for title, text in self.sections)
        front = "\n".join(f"## {title}\n\n{text}" for title, text in self.front)
        quick = " (**quick run**: smaller workload)" if self.quick else ""
        load = facts.get("load", "unknown")
        notes = "".join(f"\n- {n}" for n in self.notes)
        issue10 = (
            f"## Targets (issue 10: what a user gets)\n\n{self.summary10()}\n{front}\n"
            if self.front
            else ""
        )
        core = (
            f"## Targets (issue 6: core only, no event loop)\n\n{self.summary()}\n{body}"
            if self.sections
            else ""
        )
        return f"""# Benchmarks

Written by `python -m benchmarks` (`nox -s bench`){quick}. These machines are shared and noisy:
**compare ratios measured in the same run, never absolute times across runs.**

- date: {date}; run took {self.seconds:.0f} s
- command: `{facts["command"].strip()}`
- machine: {facts["cpus"]} CPUs, {facts["cpu"]}; {facts["platform"]}
- python: {facts["python"]}; {facts["versions"]}; commit {facts["commit"]}
- load average (1/5/15 min): {load}{notes}

{issue10}{core}"""
