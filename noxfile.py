"""Developer sessions: tests, lint, typecheck, bench."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the full test suite (live tests stay off unless --run-live is passed)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.17,<0.18")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "backpack_actors")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: print numbers, compare ratios in one run."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Pipeline fuzzing at scale (>= 100k adversarial frames and REST bodies, FUZZ_EXAMPLES),
    then every coverage-guided target under atheris (FUZZ_RUNS executions or FUZZ_SECONDS each).
    """
    if session.venv_backend != "none":
        session.install("-e", ".[test,fuzz]")
    # The caller's environment (session.env holds only the session's own variables).
    examples = os.environ.get("FUZZ_EXAMPLES", "850")
    session.run(
        "pytest",
        "tests/fuzz",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"FUZZ_EXAMPLES": examples},
    )
    session.run(
        "python",
        "-m",
        "tests.fuzz.targets.run",
        env={
            "FUZZ_RUNS": os.environ.get("FUZZ_RUNS", "20000"),
            "FUZZ_SECONDS": os.environ.get("FUZZ_SECONDS", "120"),
        },
    )


@nox.session
def soak(session: nox.Session) -> None:
    """Whole pipeline vs the simulator over loopback with random faults (default 30 min)."""
    _install_unless_no_venv(session)
    session.run("python", "-m", "backpack_actors.soak", *session.posargs)


def _install_unless_no_venv(session: nox.Session) -> None:
    # `nox --no-venv` runs in the current (already installed) environment: nothing to install.
    if session.venv_backend != "none":
        session.install("-e", ".[test]")
