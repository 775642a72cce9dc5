"""Run fuzz targets under atheris: ``python -m tests.fuzz.targets.run [NAME ...]``.

Each target runs in its own process (libFuzzer runs one target per process) for ``--runs``
executions (env ``FUZZ_RUNS``, default 20000) or ``--seconds`` (env ``FUZZ_SECONDS``, default
120), whichever ends first, starting from ``tests/fuzz/corpus/<name>/``. New inputs go to a
scratch directory, never into the committed corpus; a crash is written to ``--artifacts``
(default ``fuzz-artifacts/``) and makes the run fail. Prints one line per target.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
ROOT = Path(__file__).resolve().parents[3]


def _child(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    # Instrument the library only: coverage of what the target exercises, not of the test code.
    with atheris.instrument_imports(include=["backpack_actors"]):
        from tests.fuzz.targets import load

        target = load(name)
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


def _run(name: str, runs: int, seconds: int, artifacts: Path) -> tuple[bool, str]:
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        args = [
            sys.executable,
            "-m",
            "tests.fuzz.targets.run",
            "--child",
            name,
            "--",
            f"-runs={runs}",
            f"-max_total_time={seconds}",
            "-timeout=10",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={artifacts}/{name}-",
            "-print_final_stats=1",
            scratch,
            str(CORPUS / name),
        ]
        started = time.monotonic()
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
    # atheris prints an uncaught exception's traceback on stdout, libFuzzer its log on stderr.
    log = done.stdout + done.stderr
    (artifacts / f"{name}.log").write_text(log)
    execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    summary = (
        f"{name}: {execs.group(1) if execs else '?'} executions in {elapsed:.0f} s, "
        f"coverage {cov[-1] if cov else '?'} edges"
    )
    if done.returncode != 0:
        return False, f"{summary}: FAILED (exit {done.returncode}; see {artifacts}/{name}.log)"
    return True, summary + ": no findings"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"targets (default all: {', '.join(TARGETS)})")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", "20000")))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "120")))
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    if "--child" in sys.argv:
        # The child process: python -m tests.fuzz.targets.run --child NAME -- LIBFUZZER_ARGS.
        index = sys.argv.index("--")
        _child(sys.argv[sys.argv.index("--child") + 1], sys.argv[index + 1 :])
        return 0
    options = parser.parse_args()
    unknown = [n for n in options.names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    ok = True
    for name in options.names or list(TARGETS):
        passed, line = _run(name, options.runs, options.seconds, options.artifacts.resolve())
        print(line, flush=True)
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
