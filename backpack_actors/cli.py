"""Command line: ``python -m backpack_actors`` / ``backpack-actors``.

Commands: ``run`` (a feed from ``--config`` or flags, JSON Lines out), ``demo`` (the same against
the embedded simulator, offline), ``sim`` (the standalone simulator), ``markets`` (every listed
market and its symbol forms), ``record`` (a feed's raw input to a ``.jsonl[.gz]`` recording) and
``replay`` (a recording back into the events ``run`` would have written).

Exit codes: 0 ok, 1 internal error, 2 configuration error, 3 region restricted, 4 exchange
unreachable. Errors are printed as one ``error: ...`` line naming the fix; ``--log-level debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["describe_error", "main"]

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_DEMO_HINT = (
    "try `python -m backpack_actors demo` (offline) or point --rest-url/--ws-url at a reachable "
    "endpoint"
)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _add_output_arguments(parser: argparse.ArgumentParser, *, book_depth: int) -> None:
    out = parser.add_argument_group("output")
    out.add_argument(
        "-o", "--output", metavar="FILE", help="append JSON Lines to FILE (default: stdout)"
    )
    out.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="KIND:TARGET",
        help="another output, repeatable: parquet:DIR[?rows=N&flush=SECONDS] (hourly Parquet "
        "files; needs the [parquet] extra)",
    )
    out.add_argument("--duration", type=_positive, metavar="SECONDS", help="stop after SECONDS")
    out.add_argument("--max-events", type=_count, metavar="N", help="stop after N events")
    out.add_argument(
        "--book-depth",
        type=_count,
        default=None,
        metavar="N",
        help=f"levels per side in book snapshots, 0 = whole book (default {book_depth})",
    )
    out.add_argument(
        "--live",
        action="store_true",
        help="terminal view of books, trades and health (JSONL then only goes to --output)",
    )
    out.add_argument(
        "--levels", type=_count, default=5, metavar="N", help="levels shown by --live (default 5)"
    )
    out.add_argument(
        "--metrics-port",
        type=_count,
        metavar="PORT",
        help="serve Prometheus metrics on HOST:PORT/metrics (0 = any free port)",
    )
    out.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="bind address of the metrics server (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    out.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="warning",
        help="log level on stderr; debug also prints tracebacks (default warning)",
    )


def _add_feed_arguments(parser: argparse.ArgumentParser, *, urls: bool) -> None:
    feed = parser.add_argument_group("feed (flags override the config file)")
    if urls:
        feed.add_argument(
            "-c", "--config", metavar="FILE", help="YAML config (cryptofeed format, see README)"
        )
    feed.add_argument(
        "--symbols",
        nargs="+",
        metavar="SYMBOL",
        help="symbols, e.g. BTC-USDC ETH-USDC-PERP, or `all` (every listed market; new "
        "listings join at the metadata refresh)",
    )
    feed.add_argument(
        "--market-type",
        nargs="+",
        choices=("spot", "perp"),
        metavar="TYPE",
        help="with --symbols all: only these market types (spot, perp)",
    )
    feed.add_argument(
        "--quote", nargs="+", metavar="ASSET", help="with --symbols all: only these quote assets"
    )
    feed.add_argument(
        "--channels",
        nargs="+",
        metavar="CHANNEL",
        help="any of trades l2_book book_ticker ticker candles:<interval> mark_price "
        "open_interest liquidations (default trades l2_book)",
    )
    feed.add_argument(
        "--depth-stream",
        choices=("realtime", "200ms", "600ms", "1000ms"),
        help="l2_book from the real-time depth stream (default) or one aggregated over a window",
    )
    feed.add_argument(
        "--book-snapshots",
        nargs=2,
        type=int,
        metavar=("DEPTH", "INTERVAL_MS"),
        help="also a top-DEPTH book (0 = whole) every INTERVAL_MS of exchange time",
    )
    feed.add_argument(
        "--snapshot-interval",
        type=float,
        metavar="SECONDS",
        help="periodic REST book snapshot, 0 = off (default 30)",
    )
    feed.add_argument(
        "--rest-only", action="store_true", default=None, help="poll REST, no WebSocket"
    )
    if urls:
        feed.add_argument("--rest-url", metavar="URL", help="REST base URL (e.g. a simulator)")
        feed.add_argument("--ws-url", metavar="URL", help="WebSocket URL (e.g. a simulator)")
        feed.add_argument(
            "--connect-timeout",
            type=_positive,
            default=15.0,
            metavar="SECONDS",
            help="give up (exit 4) if the feed has not started by then (default 15)",
        )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backpack-actors",
        description="Backpack market data as supervised trio actors.",
        epilog="exit codes: 0 ok, 1 internal error, 2 configuration error, "
        "3 region restricted, 4 exchange unreachable",
    )
    from backpack_actors import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a feed; events as JSON Lines")
    _add_feed_arguments(run, urls=True)
    _add_output_arguments(run, book_depth=0)
    from backpack_actors.bus.cli import add_bus_arguments, add_bus_parser

    add_bus_arguments(run)

    demo = sub.add_parser("demo", help="run a feed against the embedded simulator (offline)")
    _add_feed_arguments(demo, urls=False)
    _add_output_arguments(demo, book_depth=10)
    sim_group = demo.add_argument_group("simulator")
    sim_group.add_argument("--seed", type=int, default=1, help="market model seed (default 1)")
    sim_group.add_argument(
        "--rate", type=_positive, default=20.0, help="depth messages/s per market (default 20)"
    )
    sim_group.add_argument(
        "--faults",
        action="store_true",
        help="inject a fault every --fault-interval seconds (gaps, reorders, disconnects, "
        "malformed frames, stalls, 429s, a WebSocket outage with REST-only fallback)",
    )
    sim_group.add_argument(
        "--fault-interval",
        type=_positive,
        default=4.0,
        metavar="SECONDS",
        help="seconds between --faults injections (default 4)",
    )
    sim_group.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        type=_fault_spec,
        help="a simulator fault spec KIND[:k=v,...][@SECONDS] (repeatable; see `sim --help`)",
    )

    record = sub.add_parser(
        "record",
        help="run a feed and record its raw frames and REST responses (replay reproduces it)",
    )
    _add_feed_arguments(record, urls=True)
    rec = record.add_argument_group("recording")
    rec.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the recording: FILE.jsonl or FILE.jsonl.gz (overwritten)",
    )
    rec.add_argument("--events", metavar="FILE", help="also append the events as JSON Lines")
    rec.add_argument("--duration", type=_positive, metavar="SECONDS", help="stop after SECONDS")
    rec.add_argument("--max-events", type=_count, metavar="N", help="stop after N events")
    rec.add_argument(
        "--book-depth",
        type=_count,
        default=None,
        metavar="N",
        help="levels per side in book snapshots, 0 = whole book (default 0)",
    )
    rec.add_argument("--log-level", choices=_LOG_LEVELS, default="warning")
    rec_sim = record.add_argument_group("simulator (--demo)")
    rec_sim.add_argument(
        "--demo", action="store_true", help="record the embedded simulator (offline)"
    )
    rec_sim.add_argument("--seed", type=int, default=1, help="market model seed (default 1)")
    rec_sim.add_argument(
        "--rate", type=_positive, default=20.0, help="depth messages/s per market (default 20)"
    )
    rec_sim.add_argument("--faults", action="store_true", help="the demo's fault schedule")
    rec_sim.add_argument(
        "--fault-interval", type=_positive, default=4.0, metavar="SECONDS", help="default 4"
    )
    rec_sim.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", type=_fault_spec, help="see demo"
    )

    replay = sub.add_parser("replay", help="replay a recording: the recorded run's events")
    replay.add_argument("recording", metavar="FILE", help="a .jsonl or .jsonl.gz recording")
    replay.add_argument(
        "--pace",
        choices=("fast", "recorded"),
        default="fast",
        help="as fast as possible (default) or at the recorded pace",
    )
    replay.add_argument(
        "-o", "--output", metavar="FILE", help="append JSON Lines to FILE (default: stdout)"
    )
    replay.add_argument("--log-level", choices=_LOG_LEVELS, default="warning")

    export = sub.add_parser(
        "export", help="a recording's events as Parquet datasets or Tardis-style CSV files"
    )
    export.add_argument("recording", metavar="FILE", help="a .jsonl or .jsonl.gz recording")
    export.add_argument(
        "--format",
        choices=("parquet", "tardis-csv"),
        default="parquet",
        help="parquet (needs the [parquet] extra) or tardis-csv (default parquet)",
    )
    export.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (new, or empty)"
    )
    export.add_argument("--log-level", choices=_LOG_LEVELS, default="warning")

    from backpack_actors.sim.server import add_sim_arguments

    add_bus_parser(sub)
    sim = sub.add_parser("sim", help="run the Backpack exchange simulator (REST + WebSocket)")
    add_sim_arguments(sim)
    from backpack_actors.sim.replay import add_replay_arguments

    add_replay_arguments(sim)

    markets = sub.add_parser("markets", help="list markets: every symbol form, tick/step sizes")
    markets.add_argument(
        "--rest-url",
        default="https://api.backpack.exchange",
        metavar="URL",
        help="exchange or simulator REST URL (default the exchange)",
    )
    markets.add_argument("--quote", metavar="ASSET", help="only markets quoted in ASSET")
    markets.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    markets.add_argument(
        "--connect-timeout", type=_positive, default=15.0, metavar="SECONDS", help="default 15"
    )
    markets.add_argument("--log-level", choices=_LOG_LEVELS, default="warning")
    return parser


def _fault_spec(text: str) -> str:
    from backpack_actors.sim.faults import parse_fault_spec

    try:
        parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# --- configuration from flags ----------------------------------------------------------------


def _feed_config(args: argparse.Namespace, *, default_symbols: Sequence[str] = ()) -> Any:
    import attrs

    from backpack_actors.config import FeedConfig, load_config

    overrides: dict[str, Any] = {}
    for flag, key in (
        ("symbols", "symbols"),
        ("market_type", "market_types"),
        ("quote", "quotes"),
        ("channels", "channels"),
        ("depth_stream", "depth_stream"),
        ("snapshot_interval", "snapshot_interval"),
        ("rest_only", "rest_only"),
        ("rest_url", "rest_url"),
        ("ws_url", "ws_url"),
        ("book_depth", "book_depth"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = list(value) if isinstance(value, list) else value
    snapshots = getattr(args, "book_snapshots", None)
    if snapshots is not None:
        overrides["book_snapshots"] = {"depth": snapshots[0], "interval_ms": snapshots[1]}
    config_path = getattr(args, "config", None)
    if config_path:
        config = load_config(config_path)
        config = attrs.evolve(config, **overrides) if overrides else config
    else:
        if "symbols" not in overrides:
            if not default_symbols:
                from backpack_actors.errors import ConfigError

                raise ConfigError("symbols", "--symbols SYMBOL... or --config FILE")
            overrides["symbols"] = list(default_symbols)
        config = FeedConfig.from_kwargs(**overrides)
    _check_url_pair(config)
    return config


def _check_url_pair(config: Any) -> None:
    """One endpoint moved and the other left at production is a mistake, not a setup: the feed
    would stream from production (or fall back to REST-only) while the user watches their own
    host. REST-only feeds open no WebSocket, so their ``ws_url`` does not matter."""
    from backpack_actors.config import FeedConfig
    from backpack_actors.errors import ConfigError

    defaults = FeedConfig(symbols=("BTC-USDC",))
    rest_moved = config.rest_url != defaults.rest_url
    ws_moved = config.ws_url != defaults.ws_url
    if rest_moved == ws_moved or (rest_moved and not config.use_websocket):
        return
    given, missing = ("--rest-url", "--ws-url") if rest_moved else ("--ws-url", "--rest-url")
    raise ConfigError(
        missing.removeprefix("--").replace("-", "_"),
        f"{missing} as well: {given} points at another host, and without {missing} the feed "
        f"would use the production exchange for it",
    )


# --- errors ------------------------------------------------------------------------------------

_LINE = re.compile(r"at line (\d+)")


def _yaml_key(path: str, expected: str) -> str:
    """The key on the line a YAML error points at, when there is one."""
    match = _LINE.search(expected)
    if not match:
        return ""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    number = int(match.group(1))
    for index in (number - 1, number - 2):
        if 0 <= index < len(lines):
            key = re.match(r"\s*-?\s*([A-Za-z_][\w-]*)\s*:", lines[index])
            if key:
                return f" near key {key.group(1)!r}"
    return ""


def _config_message(exc: Any, config_path: str | None) -> str:
    from backpack_actors.errors import UnknownSymbolError, echo

    where = f"{config_path}: " if config_path else ""
    if isinstance(exc, UnknownSymbolError):
        close = ", ".join(exc.suggestions) if exc.suggestions else "none close"
        return (
            f"{echo(exc.symbol)} is not listed by the exchange (closest: {close}); Backpack lists "
            "mostly USDC-quoted markets, so use e.g. BTC-USDC (`python -m backpack_actors "
            "markets` lists them all)"
        )
    expected: str = exc.expected
    if expected.startswith("a readable config file"):
        reason = expected.removeprefix("a readable config file").strip(" ()")
        return f"cannot read config file {exc.key} ({reason}); check the path"
    if expected.startswith("valid YAML"):
        detail = expected.removeprefix("valid YAML").strip(" ()")
        near = _yaml_key(exc.key, expected)
        return f"{exc.key}: invalid YAML ({detail}){near}; fix the syntax there"
    variable = re.match(r"environment variable (\w+) to be set", expected)
    if variable:
        name = variable.group(1)
        return (
            f"{where}{exc.key} uses ${{{name}}} but {name} is not set; export {name}=... "
            f"(empty means none) or write ${{{name}:-default}}"
        )
    if expected.startswith("a known key"):
        hint = expected.removeprefix("a known key").strip()
        key = echo(exc.key)
        return f"{where}unknown key {key}{' ' + hint if hint else ''}; remove or rename it"
    if exc.key == "symbols" and expected.startswith("--symbols"):
        return "no symbols given; pass --symbols BTC-USDC ... or --config FILE"
    if exc.key in ("rest_url", "ws_url") and expected.startswith("--"):
        flag, _, why = expected.partition(" as well: ")
        return (
            f"{where}{why}; pass {flag} too (`{exc.key}` in the config), e.g. --rest-url "
            "http://127.0.0.1:8765 --ws-url ws://127.0.0.1:8765 for `sim`"
        )
    return f"{where}invalid configuration: {exc}; correct that setting"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__
    return seen


def describe_error(exc: BaseException, config_path: str | None = None) -> tuple[int, str]:
    """The exit code and the one-line message (without ``error: ``) for a failure.

    No message shows a URL's password (every one passes through ``redact_urls``, whatever
    produced it). A peer that does not answer like the Backpack exchange (a ProtocolError: an
    HTML page, a 404 on a market route, metadata out of bounds) exits 4, as unreachable does.
    """
    from backpack_actors.errors import redact_urls

    def describe(exc: BaseException) -> tuple[int, str]:
        from backpack_actors.errors import (
            ConfigError,
            EscalationError,
            ExchangeUnavailableError,
            ProtocolError,
            RegionRestrictedError,
        )
        from backpack_actors.runner.app import ExchangeUnreachableError, ExitCode
        from backpack_actors.testing import unwrap_group

        exc = unwrap_group(exc)
        causes = _chain(exc)
        if isinstance(exc, EscalationError) and len(causes) > 1:
            causes = causes[1:]
        root = causes[0]
        if isinstance(root, ConfigError):
            return ExitCode.CONFIG, _config_message(root, config_path)
        if isinstance(root, RegionRestrictedError):
            return ExitCode.REGION_RESTRICTED, (
                f"the exchange refuses service from this location (HTTP {root.status} from "
                f"{root.url}); point --rest-url/--ws-url (rest_url/ws_url in the config) at an "
                "alternate endpoint or a proxy you may use, or try `python -m backpack_actors demo`"
            )
        if isinstance(root, ProtocolError):
            return ExitCode.UNREACHABLE, (
                f"{root}; point --rest-url/--ws-url (rest_url/ws_url in the config) at the "
                f"Backpack exchange or a faithful proxy, or {_DEMO_HINT}"
            )
        if isinstance(root, ExchangeUnreachableError | ExchangeUnavailableError):
            # When the last failure is known and was an answer that is not Backpack's, say so.
            answer = next((c for c in causes[1:] if isinstance(c, ProtocolError)), None)
            why = f" (the last answer: {answer})" if answer is not None else ""
            return ExitCode.UNREACHABLE, f"{root}{why}; check the network, or {_DEMO_HINT}"
        from backpack_actors.runner.metrics import MetricsListenError

        if isinstance(root, MetricsListenError):
            where = f"{root.host}:{root.port}"
            return ExitCode.CONFIG, _listen_message(root.error, where, "--metrics-port")
        if isinstance(root, OSError):
            return ExitCode.CONFIG, f"{root.strerror or root} ({root.filename}); check the path"
        if isinstance(root, ValueError):
            return ExitCode.CONFIG, f"{root}; correct the argument"
        return ExitCode.INTERNAL, (
            f"internal error: {type(root).__name__}: {root}; rerun with --log-level debug for the "
            "traceback and please report it"
        )

    code, message = describe(exc)
    return code, redact_urls(message)


class _HoldingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs to stderr, holding back what the final ``error:`` line would only repeat.

    Until the feed has started every record is held (retry warnings of a startup that fails end
    in one error line instead); afterwards only supervisor escalations are held. Held records
    are written by :meth:`release_held` (the run went on or ended well) or dropped by
    :meth:`discard_held` (the CLI prints its one-line error instead).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.holding = True
        self.held: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        escalation = record.name == "backpack_actors.supervisor" and record.levelno >= logging.ERROR
        if self.holding or escalation:
            self.held.append(record)
            return
        # Whatever sys.stderr is now: the --live view replaces it while it redraws, so that log
        # lines print above the view instead of shifting it.
        self.stream = sys.stderr
        super().emit(record)

    def started(self, _feed: object = None) -> None:
        self.holding = False
        held, self.held = self.held, []
        for record in held:
            self.emit(record)

    def release_held(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        self.stream = sys.stderr
        for record in held:
            super().emit(record)

    def discard_held(self) -> None:
        self.held.clear()


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- commands ----------------------------------------------------------------------------------


def _bus_options(args: argparse.Namespace) -> Any:
    from backpack_actors.bus.cli import bus_options

    return bus_options(args)


def _run_options(args: argparse.Namespace, config: Any) -> Any:
    from backpack_actors.runner.app import RunOptions

    return RunOptions(
        output=args.output,
        duration=args.duration,
        max_events=args.max_events,
        book_depth=config.book_depth,
        live=args.live,
        live_levels=args.levels,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        connect_timeout=getattr(args, "connect_timeout", 15.0),
        bus=_bus_options(args),
        sinks=tuple(args.sink),
    )


def _command(args: argparse.Namespace, handler: _HoldingHandler) -> int:
    import trio

    if args.command == "markets":
        from backpack_actors.runner.markets import fetch_markets, list_markets, markets_rows

        handler.started()
        table = trio.run(lambda: fetch_markets(args.rest_url, deadline=args.connect_timeout))
        list_markets(markets_rows(table, args.quote), as_json=args.json)
        return 0
    if args.command == "replay":
        from backpack_actors.runner.record import run_replay

        handler.started()
        replayed = trio.run(lambda: run_replay(args.recording, pace=args.pace, output=args.output))
        print(replayed.line(args.recording), file=sys.stderr, flush=True)
        return 0
    if args.command == "export":
        from backpack_actors.export import export_recording

        handler.started()
        exported = trio.run(lambda: export_recording(args.recording, args.out, format=args.format))
        print(exported.line(args.out), file=sys.stderr, flush=True)
        return 0
    if args.command == "bus":
        from backpack_actors.bus.cli import run_bus_command

        handler.started()
        return run_bus_command(args)
    if args.command == "record":
        return _record_command(args, handler)
    if args.command == "demo":
        from backpack_actors.runner.demo import DEMO_SYMBOLS, DemoOptions, run_demo

        if args.book_depth is None:
            args.book_depth = 10
        config = _feed_config(args, default_symbols=DEMO_SYMBOLS)
        demo = DemoOptions(
            seed=args.seed,
            rate=args.rate,
            faults=args.faults,
            fault_interval=args.fault_interval,
            fault_specs=tuple(args.fault),
        )
        options = _run_options(args, config)
        summary = trio.run(lambda: run_demo(config, options, demo, on_started=handler.started))
    else:
        from backpack_actors.runner.app import run_feed

        config = _feed_config(args)
        options = _run_options(args, config)
        summary = trio.run(lambda: run_feed(config, options, on_started=handler.started))
    handler.release_held()
    print(summary.line(), file=sys.stderr, flush=True)
    return 0


def _record_command(args: argparse.Namespace, handler: _HoldingHandler) -> int:
    import trio

    from backpack_actors.runner.app import RunOptions
    from backpack_actors.runner.demo import DEMO_SYMBOLS, DemoOptions
    from backpack_actors.runner.record import run_record

    demo = None
    if args.demo:
        demo = DemoOptions(
            seed=args.seed,
            rate=args.rate,
            faults=args.faults,
            fault_interval=args.fault_interval,
            fault_specs=tuple(args.fault),
        )
    config = _feed_config(args, default_symbols=DEMO_SYMBOLS if args.demo else ())
    options = RunOptions(
        output=args.events,
        duration=args.duration,
        max_events=args.max_events,
        book_depth=config.book_depth,
        connect_timeout=args.connect_timeout,
    )
    summary = trio.run(
        lambda: run_record(config, options, args.output, demo=demo, on_started=handler.started)
    )
    handler.release_held()
    print(summary.line(), file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one command; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "sim":
        return _sim_command(args)
    level = args.log_level
    handler = _HoldingHandler()
    if level == "debug":
        handler.started()
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    try:
        return _command(args, handler)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers were installed (during startup): nothing to flush.
        print("interrupted", file=sys.stderr)
        return 0
    except BaseException as exc:  # the CLI's one place that turns errors into exit codes
        if _is_broken_pipe(exc):
            # The reader went away (`... | head`): as for any Unix filter, stop quietly.
            _silence_stdout()
            return 0
        code, message = describe_error(exc, getattr(args, "config", None))
        handler.discard_held()
        if level == "debug":
            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {_one_line(message)}", file=sys.stderr, flush=True)
        return int(code)


def _sim_command(args: argparse.Namespace) -> int:
    from backpack_actors.sim.server import run_sim
    from backpack_actors.testing import unwrap_group

    try:
        if args.replay is not None:
            from backpack_actors.sim.replay import run_replay_server

            return run_replay_server(args)
        return run_sim(args)
    except BaseException as exc:  # the simulator's one place that turns errors into exit codes
        root = unwrap_group(exc)
        if not isinstance(root, OSError):
            raise
        where = f"{args.host}:{args.port}"
        print(f"error: {_listen_message(root, where, '--port')}", file=sys.stderr, flush=True)
        return int(_config_exit_code())


def _listen_message(exc: OSError, where: str, flag: str) -> str:
    """Why a server could not listen on ``where``, and the flag that fixes it."""
    import errno

    if exc.errno == errno.EADDRINUSE:
        why = "the address is already in use (another process listens there)"
    else:
        why = exc.strerror or str(exc)
    return f"cannot listen on {where}: {why}; choose another {flag} (0 = any free port)"


def _config_exit_code() -> int:
    from backpack_actors.runner.app import ExitCode

    return int(ExitCode.CONFIG)


def _is_broken_pipe(exc: BaseException) -> bool:
    from backpack_actors.testing import unwrap_group

    leaf = unwrap_group(exc)
    return any(isinstance(e, BrokenPipeError) for e in (leaf, leaf.__cause__, leaf.__context__))


def _silence_stdout() -> None:
    # Python flushes stdout at exit; on a closed pipe that would print a second error.
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
