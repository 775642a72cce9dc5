"""Signed REST calls for the private feed: a real HTTP client and an in-process one.

Both sign every request with the feed's :class:`~backpack_actors.auth.Signer` (the instruction
comes from the method and path, docs/protocol.md §5) and judge statuses in one place:
``raise_for_status`` (transport/rest.py) for the public rules, plus Backpack's authentication
refusals — 401, or a 4xx naming the signature, the window or the key — as
:class:`~backpack_actors.auth.AuthError`, which is never retried.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

import msgspec
import trio

from backpack_actors.auth import AuthError, Signer, format_value
from backpack_actors.errors import (
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    redact_url,
)
from backpack_actors.transport.rest import _bounded_session, raise_for_status

__all__ = [
    "INSTRUCTIONS",
    "HttpPrivateRest",
    "PrivateRest",
    "SimPrivateRest",
    "measure_offset",
]

INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/capital"): "balanceQuery",
    ("GET", "/api/v1/position"): "positionQuery",
    ("GET", "/api/v1/order"): "orderQuery",
    ("POST", "/api/v1/order"): "orderExecute",
    ("DELETE", "/api/v1/order"): "orderCancel",
    ("GET", "/api/v1/orders"): "orderQueryAll",
    ("DELETE", "/api/v1/orders"): "orderCancelAll",
    ("GET", "/wapi/v1/history/orders"): "orderHistoryQueryAll",
    ("GET", "/wapi/v1/history/fills"): "fillHistoryQueryAll",
}
"""Instruction names by method and path (the official SDK's and ccxt's names)."""

_AUTH_WORDS = ("signature", "expired", "api key", "x-api-key", "x-timestamp", "x-window")
_MAX_BODY = 16 * 1024 * 1024


class PrivateRest(Protocol):
    """What the private feed needs from REST."""

    signer: Signer

    async def server_time_ms(self) -> int: ...

    async def request(self, method: str, path: str, params: Mapping[str, object]) -> Any: ...


def _query(params: Mapping[str, object]) -> str:
    return "&".join(
        f"{quote(k, safe='')}={quote(format_value(v), safe='')}"
        for k, v in sorted(params.items())
        if v is not None
    )


def _judge(status: int, headers: Mapping[str, str], body: bytes, url: str) -> Any:
    try:
        raise_for_status(status, headers, body, url)
    except ExchangeRequestError as exc:
        text = f"{exc.code or ''} {exc}".lower()
        if (
            status == 401
            or exc.code in ("UNAUTHORIZED", "INVALID_SIGNATURE")
            or any(word in text for word in _AUTH_WORDS)
        ):
            cause = str(exc).split(": ", 1)[-1]
            raise AuthError(cause, f"HTTP {status} for {exc.url}") from None
        raise
    try:
        return msgspec.json.decode(body) if body.strip() else None
    except msgspec.DecodeError:
        raise ProtocolError(f"rest:{redact_url(url)}", "body is not JSON", body) from None


async def measure_offset(rest: PrivateRest) -> int:
    """Measure the server clock against the signer's local clock; returns the offset in ms."""
    before = rest.signer.clock()
    server = await rest.server_time_ms()
    after = rest.signer.clock()
    return rest.signer.offset.update(before, server, after)


class HttpPrivateRest:
    """Signed calls over HTTP(S) with ``requests`` in worker threads (bounded body and time)."""

    def __init__(self, rest_url: str, signer: Signer, *, timeout: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.signer = signer
        self.timeout = timeout
        self._session = _bounded_session(timeout, _MAX_BODY)
        self._limiter = trio.CapacityLimiter(4)

    def __repr__(self) -> str:
        return f"HttpPrivateRest({redact_url(self.rest_url)!r})"

    async def server_time_ms(self) -> int:
        url = f"{self.rest_url}/api/v1/time"
        status, headers, body = await self._send("GET", url, {}, None)
        raise_for_status(status, headers, body, url)
        try:
            return int(body.strip())
        except ValueError:
            raise ProtocolError("rest:/api/v1/time", "not an integer", body) from None

    async def request(self, method: str, path: str, params: Mapping[str, object]) -> Any:
        instruction = INSTRUCTIONS[(method, path)]
        headers = self.signer.headers(instruction, params)
        url = f"{self.rest_url}{path}"
        body: bytes | None = None
        if method == "GET":
            query = _query(params)
            if query:
                url = f"{url}?{query}"
        else:
            body = json.dumps(dict(params), default=format_value).encode()
            headers["Content-Type"] = "application/json"
        status, answer_headers, answer = await self._send(method, url, headers, body)
        return _judge(status, answer_headers, answer, url)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        def call() -> tuple[int, dict[str, str], bytes]:
            import requests

            try:
                response = self._session.request(
                    method, url, headers=dict(headers), data=body, timeout=self.timeout
                )
            except requests.RequestException as exc:
                # The exception text holds only the URL and the reason, never the headers.
                raise ExchangeUnavailableError(
                    f"cannot reach {redact_url(url)}: {type(exc).__name__}"
                ) from None
            return response.status_code, dict(response.headers), response.content

        return await trio.to_thread.run_sync(call, limiter=self._limiter)


class _InProcess(Protocol):
    async def handle_http(
        self,
        method: str,
        path: str,
        query: Any = None,
        *,
        client: str = ...,
        headers: Mapping[str, str] | None = ...,
        body: bytes = ...,
    ) -> Any: ...


class SimPrivateRest:
    """Signed calls straight into an in-process ``SimExchange`` (virtual-time tests)."""

    def __init__(self, exchange: _InProcess, signer: Signer) -> None:
        self._exchange = exchange
        self.signer = signer

    def __repr__(self) -> str:
        return "SimPrivateRest()"

    async def server_time_ms(self) -> int:
        answer = await self._exchange.handle_http("GET", "/api/v1/time")
        return int(answer.body)

    async def request(self, method: str, path: str, params: Mapping[str, object]) -> Any:
        headers = self.signer.headers(INSTRUCTIONS[(method, path)], params)
        await trio.lowlevel.checkpoint()
        if method == "GET":
            query = {k: format_value(v) for k, v in params.items() if v is not None}
            answer = await self._exchange.handle_http(method, path, query, headers=headers)
        else:
            body = json.dumps(dict(params), default=format_value).encode()
            answer = await self._exchange.handle_http(
                method, path, None, headers=headers, body=body
            )
        return _judge(answer.status, answer.headers, answer.body, f"sim://in-process{path}")
