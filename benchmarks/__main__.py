"""``python -m benchmarks [--quick] [--only PARTS]``: run the benchmarks, write BENCHMARKS.md.

Parts (``--only scale,plumbing,core,e2e``; default all, in this order):

- ``scale``: the full stack over real sockets, N markets x R msg/s, ours and ccxt.pro against the
  same fresh multi-market server (``benchmarks/scale.py``, ``benchmarks/multiblaster.py``); also
  gives the latency receipt -> consumer at 50 x 20/s.
- ``plumbing``: the hot path like for like with each library's event-loop plumbing at 1, 4 and 64
  frames per socket read, wall (paired reps) and instructions under callgrind
  (``benchmarks/plumbing.py``).
- ``core``: the core-only rows (no event loop, 64 frames per read), latency, memory.
- ``e2e``: the single-market sustained-rate ladder (``benchmarks/e2e.py``).
- ``export``: a recording to Parquet and Tardis CSV, and the live Parquet sink: rows/s and MB
  per million events (``benchmarks/export.py``).
- ``bus``: the Redis Streams bus — publish throughput (JSON vs msgpack, batching on/off, beside
  the JSONL sink) and feed -> Redis -> reader latency (``benchmarks/bus.py``; needs the Redis at
  ``BUS_REDIS_URL``, default ``redis://127.0.0.1:6379/0``).
- ``startup``: client CPU per REST depth snapshot to a ready book, ccxt's path against ours
  (``benchmarks/startup.py``).

Numbers are medians of interleaved repetitions; compare ratios from the same run. A path whose
final book (or event stream) differs from the generator's ground truth fails the run.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import importlib
import io
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import machine, median, percentiles
from benchmarks.generator import Workload, make_workload
from benchmarks.report import HOT_TARGET, Report
from benchmarks.report_scale import latency_section, plumbing_section, scale_section

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
# Imported by the core part only: it drives library internals that a rewrite may move, and the
# other parts (public API only) must run regardless.
hotpath: Any = None


def _paths(workload: Workload, decoded: list[Any]) -> dict[str, Callable[[], float]]:
    return {
        "floor": lambda: hotpath.run_floor(workload),
        "decode": lambda: hotpath.stage_decode(workload),
        "ccxt": lambda: hotpath.run_ccxt(workload).seconds,
        "ours": lambda: hotpath.run_ours(workload).seconds,
        "ours_each": lambda: hotpath.run_ours(workload, one_by_one=True).seconds,
        "ours_b1": lambda: hotpath.run_ours(workload, batch=1, one_by_one=True).seconds,
        "apply": lambda: hotpath.stage_apply(workload, decoded),
        "sync": lambda: hotpath.stage_sync(workload, decoded),
        "rec_none": lambda: hotpath.stage_reconciler(workload, decoded, capacity=None),
        "rec_queue": lambda: hotpath.stage_reconciler(workload, decoded, capacity=4096),
    }


def _hot_path(workload: Workload, reps: int, report: Report) -> dict[str, float]:
    n = len(workload.frames)
    decoded = hotpath.predecode(workload)
    warm = make_workload(99, 3000)
    warm_decoded = hotpath.predecode(warm)
    for fn in _paths(warm, warm_decoded).values():
        fn()
    paths = _paths(workload, decoded)
    names = list(paths)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        # Rotate the order so no path always runs first (or right after the slowest one).
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            times[name].append(paths[name]())
        print(
            f"  rep {rep + 1}/{reps}: "
            + ", ".join(f"{name} {n / times[name][-1] / 1000:.0f}k/s" for name in names),
            flush=True,
        )
    us = {name: median(values) / n * 1e6 for name, values in times.items()}
    report.hot_path(us, {name: len(v) for name, v in times.items()})
    return us


def _latency(workload: Workload, report: Report) -> tuple[list[float], list[float]]:
    points = [50, 99, 99.9]
    ours = percentiles(hotpath.latency_ours(workload), points)
    gc.collect()
    ccxt = percentiles(hotpath.latency_ccxt(workload), points)
    report.latency(ours, ccxt)
    return ours, ccxt


def _profile(workload: Workload, report: Report, frames: int) -> None:
    part = Workload(
        workload.symbol, workload.snapshot_json, workload.frames[:frames], workload.truth
    )
    profiler = cProfile.Profile()
    profiler.enable()
    hotpath.profile_ours(part)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(18)
    report.profile(frames, out.getvalue())


def _memory(frames: int, report: Report) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "benchmarks.memory", "--frames", str(frames)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        report.memory_failed(done.stderr.strip().splitlines()[-5:])
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report.memory(result)
    return result


def _end_to_end(args: argparse.Namespace, report: Report) -> None:
    try:
        e2e = importlib.import_module("benchmarks.e2e")
    except ImportError as exc:
        report.e2e_skipped(f"benchmarks.e2e not importable: {exc}")
        return
    try:
        e2e.run(report, quick=args.quick, seed=args.seed)
    except (RuntimeError, OSError) as exc:
        # A worker or the server died: reported, so the other sections stay valid. A wrong
        # book (BenchmarkFailure) is not caught: it fails the whole run.
        report.e2e_skipped(f"the loopback run failed: {exc!r}")


PARTS = ("scale", "plumbing", "core", "e2e", "bus", "export", "startup")


def _load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _group_supported() -> bool:
    import attrs

    from backpack_actors.config import FeedConfig

    return "connection_group_size" in {f.name for f in attrs.fields(FeedConfig)}


def _scale(args: argparse.Namespace, report: Report) -> None:
    from benchmarks import scale

    if args.scale_rows:
        rows = tuple(scale.Row.parse(x) for x in args.scale_rows.split(","))
    else:
        rows = scale.QUICK_ROWS if args.quick else scale.FULL_ROWS
    if args.scale_seconds:
        rows = tuple(scale.Row(r.markets, r.rate, args.scale_seconds, r.tick) for r in rows)
    reps = args.scale_reps or (1 if args.quick else 2)
    print(
        "scale: " + ", ".join(f"{r.label} for {r.duration:g} s" for r in rows) + f", {reps} reps",
        flush=True,
    )
    data = scale.run_rows(rows, reps=reps, seed=args.seed, group=args.group)
    data["group_supported"] = _group_supported()
    title, body, targets = scale_section(data)
    report.front_section(title, body, targets)
    print(report.last_front(), flush=True)
    latency = latency_section(data)
    if latency is not None:
        report.front_section(*latency)
        print(report.last_front(), flush=True)


def _plumbing(args: argparse.Namespace, report: Report) -> None:
    from benchmarks import plumbing

    frames = args.plumbing_frames or (3000 if args.quick else 20_000)
    reps = args.plumbing_reps or (1 if args.quick else 3)
    cg = (
        args.callgrind_frames
        if args.callgrind_frames is not None
        else (500 if args.quick else 3_000)
    )
    print(f"plumbing: {frames:,} frames per k, {reps} reps, callgrind {cg:,} frames", flush=True)
    data = plumbing.run(frames=frames, reps=reps, ks=[1, 4, 64], cg_frames=cg, seed=args.seed)
    title, body, targets = plumbing_section(data)
    report.front_section(title, body, targets)
    print(report.last_front(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a few minutes)")
    parser.add_argument("--only", help=f"comma-separated parts to run: {','.join(PARTS)}")
    parser.add_argument(
        "--scale-rows",
        help="scale rows as N:R:seconds[:tick_ms],... (default: scale.FULL_ROWS)",
    )
    parser.add_argument("--scale-seconds", type=float, help="override every scale row's duration")
    parser.add_argument("--scale-reps", type=int, help="scale repetitions (default 2, quick 1)")
    parser.add_argument("--group", type=int, default=50, help="connection_group_size for ours")
    parser.add_argument("--plumbing-frames", type=int, help="per k (default 20k, quick 3k)")
    parser.add_argument("--plumbing-reps", type=int, help="default 3, quick 1")
    parser.add_argument(
        "--callgrind-frames",
        type=int,
        help="per k under callgrind (default 3k, quick 500; 0 = skip)",
    )
    parser.add_argument("--frames", type=int, help="hot-path frames (default 200k, quick 30k)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 5, quick 3)")
    parser.add_argument("--memory-frames", type=int, help="default 1M, quick 200k")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-e2e", action="store_true", help="skip the loopback benchmarks")
    parser.add_argument(
        "--out", type=Path, help="report path (default BENCHMARKS.md; quick runs write none)"
    )
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.only.split(",")) if args.only else PARTS
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    frames = args.frames or (30_000 if args.quick else 200_000)
    reps = args.reps or (3 if args.quick else 5)
    memory_frames = args.memory_frames or (200_000 if args.quick else 1_000_000)
    # A partial run never overwrites the full report unless --out says so.
    out = args.out or (None if args.quick or args.only else ROOT / "BENCHMARKS.md")

    started = time.perf_counter()
    facts = machine()
    facts["load"] = f"{_load()} at the start"
    report = Report(facts, quick=args.quick)
    print("machine:", ", ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
    if "scale" in parts:
        _scale(args, report)
    if "plumbing" in parts:
        _plumbing(args, report)
    if "core" in parts:
        _core(args, report, frames, reps, memory_frames)
    if "e2e" in parts and args.no_e2e:
        report.e2e_skipped("--no-e2e given")
    elif "e2e" in parts:
        before = len(report.sections)
        print("end to end: blaster, latency at a fixed load, sustained-rate ladder ...", flush=True)
        _end_to_end(args, report)
        for title, body in report.sections[before:]:
            print(f"\n## {title}\n\n{body}", flush=True)
    if "bus" in parts:
        from benchmarks import bus

        print("bus: publish throughput and feed -> Redis -> reader latency ...", flush=True)
        bus.run(report, quick=args.quick, seed=args.seed)
        print(report.last_section(), flush=True)
    if "export" in parts:
        from benchmarks import export

        print("export: Parquet and Tardis CSV throughput and size ...", flush=True)
        export.run(report, quick=args.quick, seed=args.seed)
        print(report.last_section(), flush=True)
    if "startup" in parts:
        from benchmarks import startup

        print("startup: REST depth snapshot -> ready book, ccxt's path vs ours ...", flush=True)
        startup.run_report(report, quick=args.quick, seed=args.seed)
        print(report.last_section(), flush=True)
    facts["load"] += f", {_load()} at the end"

    report.finish(time.perf_counter() - started, datetime.datetime.now(datetime.UTC))
    print(report.summary10(), flush=True)
    print(report.summary(), flush=True)
    if out is not None:
        out.write_text(report.markdown(), encoding="utf-8")
        print(f"wrote {out}")
    return 0


def _core(
    args: argparse.Namespace, report: Report, frames: int, reps: int, memory_frames: int
) -> None:
    global hotpath
    try:
        hotpath = importlib.import_module("benchmarks.hotpath")
    except ImportError as exc:
        report.section(
            "Core only (no event loop, 64 frames per read)",
            f"Not measured at this commit: `benchmarks/hotpath.py` drives library internals "
            f"that are not there any more ({exc}).",
        )
        print(report.last_section(), flush=True)
        print(f"memory: {memory_frames:,} frames, slow consumer (subprocess) ...", flush=True)
        _memory(memory_frames, report)
        print(report.last_section(), flush=True)
        return
    t0 = time.perf_counter()
    workload = make_workload(args.seed, frames)
    report.workload(workload, time.perf_counter() - t0)
    print(report.last_section(), flush=True)

    print(f"hot path: {frames:,} frames x {reps} interleaved reps ...", flush=True)
    us = _hot_path(workload, reps, report)
    print(report.last_section(), flush=True)

    print("per-frame latency pass ...", flush=True)
    _latency(workload, report)
    print(report.last_section(), flush=True)

    ratio = us["ccxt"] / us["ours"]
    if ratio < HOT_TARGET:
        print(f"hot path is {ratio:.1f}x ccxt.pro (< {HOT_TARGET:g}x): profiling ...", flush=True)
        _profile(workload, report, min(frames, 50_000))
        print(report.last_section(), flush=True)

    print(f"memory: {memory_frames:,} frames, slow consumer (subprocess) ...", flush=True)
    _memory(memory_frames, report)
    print(report.last_section(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
