"""Serve a ``SimExchange`` over real sockets: hypercorn on trio, one port for REST and WebSocket.

The ASGI app routes ``http`` scopes to ``SimExchange.handle_http`` and ``websocket`` scopes (any
path) to the shared WS session logic. Keep-alive: hypercorn sends the protocol pings
(``websocket_ping_interval`` = ``ping_interval``) and answers client pings itself, but ASGI exposes
no pong events, so silent clients are not dropped on this transport (only the trio-websocket
transport used by ``connect_memory_ws`` enforces ``pong_timeout``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from backpack_actors.sim.exchange import SimConfig, SimExchange
from backpack_actors.sim.faults import Faults, parse_fault_spec
from backpack_actors.sim.market import MarketSpec
from backpack_actors.sim.orders import parse_private_fault, sim_api_keys

__all__ = ["SimServer", "add_sim_arguments", "make_asgi_app", "open_simulator", "run_sim"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SimServer:
    """A running simulator: base URLs (no trailing slash) and the exchange behind them."""

    rest_url: str
    ws_url: str
    exchange: SimExchange
    port: int

    @property
    def faults(self) -> Faults:
        """Shortcut for ``exchange.faults``."""
        return self.exchange.faults


class _AsgiWsTransport:
    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

    async def receive(self) -> str | bytes | None:
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                return data
            if kind == "websocket.disconnect":
                return None

    async def send(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def keepalive(self) -> None:
        await trio.sleep_forever()


def make_asgi_app(exchange: SimExchange) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI application serving ``exchange`` (http + websocket scopes)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _http(exchange, scope, send, receive)
        elif scope["type"] == "websocket":
            await _websocket(exchange, scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    return app


async def _http(exchange: SimExchange, scope: Scope, send: Send, receive: Receive) -> None:
    client = scope.get("client")
    key = str(client[0]) if client else "unknown"
    query = scope.get("query_string", b"").decode("latin-1")
    # Private routes need the body and the signing headers (sim/orders.py).
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    request_headers = {
        k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])
    }
    response = await exchange.handle_http(
        scope["method"], scope["path"], query, client=key, headers=request_headers, body=body
    )
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _websocket(exchange: SimExchange, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    refusal = exchange.take_handshake_refusal()
    if refusal is not None:
        if "websocket.http.response" in scope.get("extensions", {}):
            start = {"type": "websocket.http.response.start", "status": refusal, "headers": []}
            await send(start)
            body = {"type": "websocket.http.response.body", "body": b"handshake refused"}
            await send(body)
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    await exchange.new_session().run(_AsgiWsTransport(receive, send))


@asynccontextmanager
async def open_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 1,
    markets: Sequence[MarketSpec | str] | None = None,
    **config: Any,
) -> AsyncIterator[SimServer]:
    """Run a simulator on ``host:port`` (0 = any free port) for the duration of the block.

    Its exchange clock starts at the wall clock unless ``epoch_us`` is given.
    """
    sim_config = SimConfig(**{"epoch_us": None, **config})
    exchange = SimExchange(seed=seed, markets=markets, config=sim_config)
    hconfig = HypercornConfig()
    hconfig.bind = [f"{host}:{port}"]
    hconfig.websocket_ping_interval = sim_config.ping_interval
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("backpack_actors.sim.hypercorn")
    hconfig.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        binds: list[str] = await nursery.start(
            # Our ASGI callable uses plain dicts; hypercorn's TypedDict signature is narrower.
            partial(serve, cast(Any, make_asgi_app(exchange)), hconfig)
        )
        bound = binds[0].removeprefix("http://")
        actual_port = int(bound.rsplit(":", 1)[1])
        url_host = f"[{host}]" if ":" in host else host
        yield SimServer(
            rest_url=f"http://{url_host}:{actual_port}",
            ws_url=f"ws://{url_host}:{actual_port}",
            exchange=exchange,
            port=actual_port,
        )
        nursery.cancel_scope.cancel()


_FAULT_HELP = """\
fault spec KIND[:key=value,...][@SECONDS] (repeatable; armed SECONDS after start). Kinds:
drop[:symbol=S,count=N] (apply a depth delta but do not send it), duplicate[:symbol,count],
reorder[:symbol,count] (swap two consecutive deltas), stall[:seconds=T,symbol=S] (hold frames
T s then send them), disconnect[:frames=N,connections=C], malformed[:symbol,count] (extra
truncated frame), refuse[:count=K,status=503] (WS handshakes), http429[:count=K,retry_after=S],
http451 (everything), http5xx[:count=K,status=503], slow[:delay=D,count=K],
private_drop[:count=N] (lose the next N private updates), private_disconnect (cut private
sessions).
Example: --fault drop:symbol=BTC_USDC@10 --fault http429:count=3@30"""


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sim`` sub-command options to ``parser``."""
    defaults = SimConfig()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port, 0 = any free (default 8765)")
    parser.add_argument("--seed", type=int, default=1, help="market model seed (default 1)")
    parser.add_argument(
        "--markets", nargs="+", metavar="SYMBOL", help="markets to list (default: all built-in)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=defaults.rate,
        help=f"depth messages per second per market (default {defaults.rate:g})",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=defaults.ping_interval,
        help=f"server WS ping period in seconds (default {defaults.ping_interval:g})",
    )
    parser.add_argument(
        "--rate-limit", action="store_true", help="enforce 2000 req/min (30/min history) per client"
    )
    parser.add_argument(
        "--api-key", metavar="KEY", help="base64 public key the account accepts (with --api-secret)"
    )
    parser.add_argument(
        "--api-secret",
        metavar="SECRET",
        help="its base64 secret; without both a key pair is generated and printed",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", type=_fault_arg, help=_FAULT_HELP
    )


def _fault_arg(text: str) -> str:
    try:
        if text.startswith("private_"):
            parse_private_fault(text)
        else:
            parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run_sim(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; prints the URLs on startup. Returns the exit code."""
    known = {f.name for f in fields(SimConfig)}
    config = {"rate": args.rate, "ping_interval": args.ping_interval, "rate_limit": args.rate_limit}
    config = {k: v for k, v in config.items() if k in known}
    try:
        config["api_keys"], key_lines = sim_api_keys(args.api_key, args.api_secret)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = [parse_fault_spec(text) for text in args.fault if not text.startswith("private_")]
    private_specs = [parse_private_fault(t) for t in args.fault if t.startswith("private_")]

    async def main() -> None:
        async with open_simulator(args.host, args.port, args.seed, args.markets, **config) as sim:
            print(f"backpack simulator: REST {sim.rest_url}  WS {sim.ws_url}", flush=True)
            print(f"markets: {' '.join(sim.exchange.symbols)}", flush=True)
            for line in key_lines:
                print(line, flush=True)
            async with trio.open_nursery() as nursery:
                for spec in specs:
                    nursery.start_soon(_arm_later, sim.exchange.faults, spec)
                for private in private_specs:
                    nursery.start_soon(private.arm, sim.exchange.engine)
                await trio.sleep_forever()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        # Ctrl-C arrives wrapped by the nurseries it crossed; anything else is a real error.
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
        return 0
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


async def _arm_later(faults: Faults, spec: Any) -> None:
    await trio.sleep(spec.at)
    faults.apply(spec)
