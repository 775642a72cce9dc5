"""Credentials in a URL (issue 12): no error message or CLI line shows the password."""

from __future__ import annotations

import socket

import pytest
import trio

from backpack_actors.cli import describe_error
from backpack_actors.errors import (
    BackpackActorsError,
    ConfigError,
    EscalationError,
    ExchangeRequestError,
    ExchangeUnavailableError,
    ProtocolError,
    RateLimitedError,
    RegionRestrictedError,
    WsProtocolViolation,
    redact_url,
    redact_urls,
)
from backpack_actors.runner.app import ExchangeUnreachableError
from backpack_actors.transport.rest import CcxtRestClient, raise_for_status

PASSWORD = "Pw-c0ffee42-UNIQUE"
URL = f"https://alice:{PASSWORD}@api.example:8443/api/v1/markets?x=1"
SHOWN = "https://alice:***@api.example:8443/api/v1/markets?x=1"


def _clean(exc: BaseException) -> None:
    assert PASSWORD not in str(exc)
    assert PASSWORD not in repr(exc)
    if type(exc).__module__ == "backpack_actors.errors":
        # The attributes too (a caller may log exc.url); ExchangeUnreachableError is the
        # runner's, whose own attributes are not this tree's.
        for value in vars(exc).values():
            assert PASSWORD not in str(value)
    _code, line = describe_error(exc)
    assert PASSWORD not in line, line


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, SHOWN),
        (f"ws://u:{PASSWORD}@h", "ws://u:***@h"),
        (f"http://u:p@ss:{PASSWORD}@h/p@th", "http://u:***@h/p@th"),  # "@" inside the password
        ("http://user@host/", "http://user@host/"),  # no password: nothing to hide
        ("https://api.backpack.exchange", "https://api.backpack.exchange"),
        (f"http://u:{PASSWORD}@[::1", "http://u:***@[::1"),  # unparsable still redacted
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_covers_every_url_in_a_text() -> None:
    text = f"GET {URL} then ws://bob:{PASSWORD}2@ws.example/ failed"
    assert redact_urls(text) == f"GET {SHOWN} then ws://bob:***@ws.example/ failed"


@pytest.mark.parametrize(
    "exc",
    [
        RegionRestrictedError(URL, 451),
        ExchangeRequestError(URL, 404, "NOT_FOUND", "no such route"),
        RateLimitedError(URL, 2.0),
        WsProtocolViolation(URL, "the server masked a frame"),
        ExchangeUnavailableError(f"Backpack answered HTTP 502 for {URL}"),
        ProtocolError("rest:/api/v1/depth", f"bad JSON from {URL}", f"<a href='{URL}'>"),
        ConfigError("exchanges.x.rest_url", "an https:// URL", f"ftp://alice:{PASSWORD}@h"),
        BackpackActorsError(f"anything about {URL}"),
        ExchangeUnreachableError(URL, 5.0, 3),
    ],
    ids=lambda e: type(e).__name__,
)
def test_no_error_of_the_tree_shows_the_password(exc: BackpackActorsError) -> None:
    _clean(exc)
    assert "alice:***@api.example" in str(exc) or "alice:***@h" in str(exc)


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (429, {"Retry-After": "3"}, b""),
        (451, {}, b""),
        (403, {}, b"<html>Forbidden</html>"),
        (500, {}, b"oops"),
        (404, {}, b'{"code": "NOT_FOUND", "message": "see ' + URL.encode() + b'"}'),
        (400, {}, URL.encode()),
    ],
)
def test_raise_for_status_never_shows_the_password(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(BackpackActorsError) as info:
        raise_for_status(status, headers, body, URL)
    _clean(info.value)


def test_the_cli_line_redacts_errors_from_anywhere() -> None:
    # An error this project did not build (a library's, say) still gets no password printed.
    for exc in (
        RuntimeError(f"boom at {URL}"),
        ValueError(f"bad {URL}"),
        OSError(2, f"No such file {URL}"),
        EscalationError("restarts exceeded").with_traceback(None),
    ):
        code, line = describe_error(exc)
        assert PASSWORD not in line, line
    chained = ExchangeUnreachableError(URL, 5.0, 1)
    chained.__cause__ = ProtocolError("rest:/api/v1/markets", f"{URL} did not answer like it")
    code, line = describe_error(chained)
    assert code == 4
    assert PASSWORD not in line
    assert "the last answer: rest:/api/v1/markets" in line


def test_a_protocol_error_reaching_the_cli_exits_4_in_one_line() -> None:
    code, line = describe_error(
        ProtocolError("rest:/api/v1/markets", "http://x did not answer like the Backpack exchange")
    )
    assert code == 4
    assert line.startswith("rest:/api/v1/markets: http://x did not answer like the Backpack")
    assert "internal error" not in line


async def test_ccxt_network_failure_with_credentials_in_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = CcxtRestClient(f"http://alice:{PASSWORD}@127.0.0.1:{port}", timeout=2)
    with trio.fail_after(20), pytest.raises(BackpackActorsError) as info:
        await client.load_markets()
    await client.aclose()
    _clean(info.value)
