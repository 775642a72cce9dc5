"""Every command in the README's ``bash``/``sh`` blocks, run as a fresh shell would run it.

Rules (also stated in the README): CLI commands run in a temporary directory holding a copy of
``examples/``, with production endpoints and ``127.0.0.1:8765`` pointed at a simulator this test
starts, ``--duration`` capped, an unbounded ``run`` given ``--max-events`` and ``sim`` stopped
once it printed its banner; ``pytest`` commands run with ``--collect-only``; ``pip install`` and
``nox`` commands are checked (the extras and sessions they name exist) rather than run, since
they are the environment and the suite running this test. Any other command fails the test: a
new README command needs a rule here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import trio

from backpack_actors.sim import SimServer, open_simulator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LOCAL_REST, LOCAL_WS = "http://127.0.0.1:8765", "ws://127.0.0.1:8765"
MAX_DURATION = 2.0
# Generous: each command starts a Python process on a shared, busy machine.
CLI_CAP = 120.0
AT_ONCE = 3
CLI_MODULE = ["python", "-m", "backpack_actors"]


def readme_commands() -> list[list[str]]:
    """Each command (``a && b`` is two), comments removed, as argument lists."""
    commands: list[list[str]] = []
    for block in BLOCK.findall(README.read_text()):
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            current: list[str] = []
            for token in [*tokens, "&&"]:
                if token == "&&":
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(token)
    return commands


def _check_pip_install(args: list[str]) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for arg in args:
        match = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
        if match:
            for extra in match[1].split(","):
                assert extra in extras, f"README installs an unknown extra {extra!r}"
        elif not arg.startswith("-"):
            assert arg in {".", "nox"}, f"README installs {arg!r}: add it to this test's rules"


def _check_nox(args: list[str]) -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    sessions = args[args.index("-s") + 1 :]
    if "--" in sessions:
        sessions = sessions[: sessions.index("--")]
    assert sessions, args
    for session in sessions:
        assert re.search(rf"@nox\.session[^\n]*\ndef {session}\(", noxfile), session


def _cli_args(args: list[str], sim: SimServer) -> list[str]:
    out = [sim.rest_url if a == LOCAL_REST else sim.ws_url if a == LOCAL_WS else a for a in args]
    command = out[0]
    if "--port" in out:
        out[out.index("--port") + 1] = "0"
    if command in ("run", "record") and "--rest-url" not in out and "--demo" not in out:
        out += ["--rest-url", sim.rest_url, "--ws-url", sim.ws_url]
    if command == "markets" and "--rest-url" not in out:
        out += ["--rest-url", sim.rest_url]
    if "--duration" in out:
        index = out.index("--duration") + 1
        out[index] = str(min(float(out[index]), MAX_DURATION))
    if command == "run" and "--duration" not in out and "--max-events" not in out:
        out += ["--max-events", "40"]
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPACK_")}
    # `backpack-actors` is the console script installed next to this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(CLI_CAP):
        return await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, cwd=cwd, env=_env()
        )


async def _sim_until_banner(argv: list[str], cwd: Path) -> str:
    with trio.fail_after(CLI_CAP):
        process = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, cwd=cwd, env=_env()
        )
        assert process.stdout is not None
        try:
            out = b""
            while b"\n" not in out:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "sim ended before its banner"
                out += chunk
        finally:
            process.terminate()
            await process.wait()
    return out.decode().splitlines()[0]


def test_readme_has_the_blocks_this_test_expects() -> None:
    commands = readme_commands()
    assert len(commands) >= 15
    assert ["python", "-m", "pip", "install", "-e", ".[test]"] in commands
    assert ["python", "-m", "pytest", "tests/cli", "-q"] in commands


async def _run_one(argv: list[str], sim: SimServer, cwd: Path) -> None:
    where = shlex.join(argv)
    if argv[:4] == ["python", "-m", "pip", "install"]:
        _check_pip_install(argv[4:])
    elif argv[0] == "nox":
        _check_nox(argv)
    elif argv[:3] == ["python", "-m", "pytest"]:
        command = [sys.executable, *argv[1:], "--collect-only", "-q", "-p", "no:cacheprovider"]
        result = await _run(command, ROOT)
        assert result.returncode == 0, (where, result.stdout.decode()[-2000:])
    elif argv[:3] == CLI_MODULE or argv[0] == "backpack-actors":
        module = argv[:3] == CLI_MODULE
        args = _cli_args(argv[3:] if module else argv[1:], sim)
        launcher = [sys.executable, *CLI_MODULE[1:]] if module else ["backpack-actors"]
        if args[0] == "sim":
            banner = await _sim_until_banner([*launcher, *args], cwd)
            assert banner.startswith("backpack simulator: REST http://"), where
        else:
            result = await _run([*launcher, *args], cwd)
            stderr = result.stderr.decode()
            assert result.returncode == 0, (where, stderr[-2000:])
            assert "Traceback" not in stderr, where
    else:
        raise AssertionError(f"README command with no rule in this test: {where}")


def _reads_a_recording(argv: list[str]) -> bool:
    return "replay" in argv


async def test_every_readme_command_runs(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    commands: list[list[str]] = []
    for argv in readme_commands():
        if argv not in commands:  # the same command twice runs once
            commands.append(argv)
    limiter = trio.CapacityLimiter(AT_ONCE)

    async def run_one(argv: list[str]) -> None:
        async with limiter:
            await _run_one(argv, sim, tmp_path)

    with trio.fail_after(400):
        async with open_simulator(port=0, seed=3, rate=40) as sim:
            # A few independent commands at once; replays after the recordings they read.
            for phase in (False, True):
                async with trio.open_nursery() as nursery:
                    for argv in commands:
                        if _reads_a_recording(argv) is phase:
                            nursery.start_soon(run_one, argv)
    # What the README promises of the record/replay pair: the same bytes.
    replayed, live = tmp_path / "replayed.jsonl", tmp_path / "live.jsonl"
    assert replayed.read_bytes() == live.read_bytes()
    assert live.stat().st_size > 0
    assert (tmp_path / "events.jsonl").stat().st_size > 0
