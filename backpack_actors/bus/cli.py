"""The command line's bus parts: ``run --bus URL`` options and ``bus status`` / ``bus read``.

Nothing here imports coredis until a bus command runs, so the CLI works without the ``redis``
extra until the bus is asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO, Any

__all__ = ["add_bus_arguments", "add_bus_parser", "bus_options", "run_bus_command"]

_DEFAULT_URL = "redis://127.0.0.1:6379/0"


def add_bus_arguments(parser: argparse.ArgumentParser) -> None:
    """``run``'s publisher options."""
    group = parser.add_argument_group("bus (Redis Streams; needs the redis extra)")
    group.add_argument(
        "--bus",
        metavar="URL",
        help="also publish to Redis Streams at URL (redis://host:port/db), sharing the symbols "
        "with the other publishers of --bus-prefix; JSONL then only goes to --output",
    )
    group.add_argument("--bus-prefix", default="bpa", help="key prefix (default bpa)")
    group.add_argument(
        "--bus-format",
        choices=("json", "msgpack"),
        default="json",
        help="entry payloads: the JSONL objects, or the same as msgpack (default json)",
    )
    group.add_argument(
        "--bus-lease-ttl",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="symbol lease TTL: a dead publisher's symbols move within about this (default 3)",
    )
    group.add_argument(
        "--bus-checkpoint-deltas",
        type=int,
        default=500,
        metavar="N",
        help="a checkpoint entry (the whole book) every N book entries (default 500)",
    )
    group.add_argument(
        "--bus-checkpoint-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="... and at least every SECONDS while deltas come (default 5)",
    )


def bus_options(args: argparse.Namespace) -> Any:
    """``run``'s BusOptions, or None without ``--bus``."""
    url = getattr(args, "bus", None)
    if not url:
        return None
    from backpack_actors.bus.publisher import BusOptions

    return BusOptions(
        url=url,
        prefix=args.bus_prefix,
        codec=args.bus_format,
        lease_ttl=args.bus_lease_ttl,
        checkpoint_deltas=args.bus_checkpoint_deltas,
        checkpoint_interval=args.bus_checkpoint_interval,
    )


def add_bus_parser(sub: Any) -> None:
    """The ``bus`` command and its ``status`` and ``read`` subcommands."""
    bus = sub.add_parser("bus", help="the Redis Streams bus: status, read")
    commands = bus.add_subparsers(dest="bus_command", required=True)
    for name, text in (
        ("status", "publishers, leases, epochs, stream lengths and reader lag"),
        ("read", "read symbols from the bus (verified); events as JSON Lines"),
    ):
        cmd = commands.add_parser(name, help=text)
        cmd.add_argument("--redis", default=_DEFAULT_URL, metavar="URL", help="Redis URL")
        cmd.add_argument("--prefix", default="bpa", help="key prefix (default bpa)")
        cmd.add_argument(
            "--log-level",
            choices=("debug", "info", "warning", "error", "critical"),
            default="warning",
        )
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="one JSON object")
        else:
            cmd.add_argument("--symbols", nargs="+", required=True, metavar="S")
            cmd.add_argument("--max-events", type=int, metavar="N")
            cmd.add_argument("--duration", type=float, metavar="SECONDS")
            cmd.add_argument("--name", help="report this reader's lag under NAME (bus status)")


def run_bus_command(args: argparse.Namespace, *, stdout: IO[str] | None = None) -> int:
    """``bus status`` or ``bus read``; returns the exit code."""
    import trio

    from backpack_actors.errors import redact_urls
    from backpack_actors.sinks.redis import REDIS_ERRORS
    from backpack_actors.testing import unwrap_group

    out = stdout if stdout is not None else sys.stdout
    try:
        if args.bus_command == "status":
            status = trio.run(bus_status, args.redis, args.prefix)
            if args.json:
                print(json.dumps(status, sort_keys=True), file=out, flush=True)
            else:
                print(format_status(status), file=out, flush=True)
            return 0
        trio.run(_read, args, out)
    except Exception as exc:
        # coredis raises from its connection task group: the error may come wrapped.
        root = unwrap_group(exc)
        if not isinstance(root, REDIS_ERRORS):
            raise
        # Exit code 4, as for an unreachable exchange: the service the command needs is not there.
        message = f"could not reach Redis at {args.redis}: {type(root).__name__}: {root}"
        print(f"error: {redact_urls(message)}; check --redis", file=sys.stderr, flush=True)
        return 4
    return 0


async def bus_status(url: str, prefix: str = "bpa") -> dict[str, Any]:
    """Publishers, and per symbol: owner, epoch, lease TTL, stream lengths, lag and groups."""
    import coredis

    from backpack_actors.bus.schema import Keys

    keys = Keys(prefix)
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, stream_timeout=5.0)
    now_ms = int(time.time() * 1000)
    async with client:
        publishers = {
            _text(member): int(score) - now_ms
            for member, score in await client.zrange(keys.publishers, 0, -1, withscores=True)
        }
        symbols = sorted(_text(s) for s in await client.smembers(keys.symbols))
        rows: dict[str, Any] = {}
        for symbol in symbols:
            lease = await client.get(keys.lease(symbol))
            owner, _, epoch = _text(lease).rpartition(":") if lease else ("", "", "")
            row: dict[str, Any] = {
                "owner": owner or None,
                "epoch": int(epoch) if epoch.isdigit() else None,
                "lease_ms": int(await client.pttl(keys.lease(symbol))) if lease else None,
            }
            for name, key in (("book", keys.book(symbol)), ("trades", keys.trades(symbol))):
                row[f"{name}_length"] = int(await client.xlen(key))
                newest = await client.xrevrange(key, count=1)
                if newest:
                    written = _written_us(newest[0].field_values)
                    row[f"{name}_age_ms"] = now_ms - written // 1000
                groups = await client.xinfo_groups(key) if row[f"{name}_length"] else ()
                row[f"{name}_groups"] = {
                    _text(g[b"name"]): {
                        "lag": g.get(b"lag"),
                        "pending": g.get(b"pending"),
                    }
                    for g in groups
                }
            rows[symbol] = row
        readers: dict[str, Any] = {}
        for reader, raw in (await client.hgetall(keys.readers)).items():
            try:
                position = json.loads(raw)
                streams = position["streams"]
                seen_ms = int(position["seen_ms"])
            except (ValueError, KeyError, TypeError):
                continue
            lag: dict[str, int] = {}
            for key, read_us in streams.items():
                newest = await client.xrevrange(key, count=1)
                if newest:
                    written = _written_us(newest[0].field_values)
                    lag[key.removeprefix(f"{prefix}:")] = max(0, (written - int(read_us)) // 1000)
            readers[_text(reader)] = {"seen_ms_ago": now_ms - seen_ms, "lag_ms": lag}
        return {"publishers": publishers, "symbols": rows, "readers": readers}


def format_status(status: dict[str, Any]) -> str:
    """``bus status`` as text: the publishers, then one line per symbol."""
    lines = [f"publishers: {len(status['publishers'])}"]
    for publisher, left in sorted(status["publishers"].items()):
        lines.append(f"  {publisher}  (registration expires in {left} ms)")
    lines.append(
        f"{'symbol':<16} {'epoch':>5} {'owner':<32} {'book':>7} {'trades':>7} "
        f"{'age ms':>7}  groups (lag)"
    )
    for symbol, row in status["symbols"].items():
        groups = ", ".join(
            f"{name}={info['lag']}"
            for kind in ("book", "trades")
            for name, info in row.get(f"{kind}_groups", {}).items()
        )
        lines.append(
            f"{symbol:<16} {row['epoch'] if row['epoch'] is not None else '-':>5} "
            f"{row['owner'] or '(none)':<32} {row['book_length']:>7} {row['trades_length']:>7} "
            f"{row.get('book_age_ms', '-'):>7}  {groups}"
        )
    readers = status.get("readers", {})
    if readers:
        lines.append("readers (lag behind the newest entry, ms):")
    for name, info in sorted(readers.items()):
        lags = ", ".join(f"{key} {ms}" for key, ms in sorted(info["lag_ms"].items()))
        lines.append(f"  {name}  (reported {info['seen_ms_ago']} ms ago)  {lags}")
    return "\n".join(lines)


async def _read(args: argparse.Namespace, out: IO[str]) -> None:
    import trio

    from backpack_actors.bus.reader import open_bus_feed
    from backpack_actors.sinks.jsonl import encode_event

    remaining = args.max_events
    with trio.move_on_after(args.duration if args.duration is not None else float("inf")):
        async with open_bus_feed(
            args.redis, args.symbols, prefix=args.prefix, name=args.name
        ) as bus:
            async for batch in bus.batches():
                if remaining is not None:
                    batch = batch[:remaining]
                    remaining -= len(batch)
                out.write(b"".join(encode_event(event) for event in batch).decode())
                out.flush()
                if remaining is not None and remaining <= 0:
                    return


def _written_us(fields: Any) -> int:
    from backpack_actors.bus.schema import parse_meta

    try:
        return parse_meta(fields).written_us
    except (KeyError, ValueError):
        return 0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
