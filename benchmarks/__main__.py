"""``python -m benchmarks [--quick]``: run every benchmark, print tables, write BENCHMARKS.md.

Numbers are medians of interleaved repetitions in one process; compare ratios from the same run.
A path whose final book (or event stream) differs from the generator's ground truth fails the run.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import importlib
import io
import json
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import hotpath
from benchmarks.common import machine, median, percentiles
from benchmarks.generator import Workload, make_workload
from benchmarks.report import HOT_TARGET, Report

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (about a minute)")
    parser.add_argument("--frames", type=int, help="hot-path frames (default 200k, quick 30k)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 5, quick 3)")
    parser.add_argument("--memory-frames", type=int, help="default 1M, quick 200k")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-e2e", action="store_true", help="skip the loopback benchmarks")
    parser.add_argument(
        "--out", type=Path, help="report path (default BENCHMARKS.md; quick runs write none)"
    )
    args = parser.parse_args(argv)
    frames = args.frames or (30_000 if args.quick else 200_000)
    reps = args.reps or (3 if args.quick else 5)
    memory_frames = args.memory_frames or (200_000 if args.quick else 1_000_000)
    out = args.out or (None if args.quick else ROOT / "BENCHMARKS.md")

    started = time.perf_counter()
    facts = machine()
    report = Report(facts, quick=args.quick)
    print("machine:", ", ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
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

    before = len(report.sections)
    if args.no_e2e:
        report.e2e_skipped("--no-e2e given")
    else:
        print("end to end: blaster, latency at a fixed load, sustained-rate ladder ...", flush=True)
        _end_to_end(args, report)
    for title, body in report.sections[before:]:
        print(f"\n## {title}\n\n{body}", flush=True)

    report.finish(time.perf_counter() - started, datetime.datetime.now(datetime.UTC))
    print(report.summary(), flush=True)
    if out is not None:
        out.write_text(report.markdown(), encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
