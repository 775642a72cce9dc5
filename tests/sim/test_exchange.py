"""SimExchange in-process (virtual time): WS frames, REST bodies, bridging, every fault kind."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio_websocket

from backpack_actors.sim import SimConfig, SimExchange

DATA_DEPTH = "depth_response_sol_usdc_recorded_excerpt.json"


def _exchange(**config: Any) -> SimExchange:
    return SimExchange(seed=1, markets=["BTC_USDC", "SOL_USDC"], config=SimConfig(**config))


async def _subscribe(ws: trio_websocket.WebSocketConnection, *streams: str) -> None:
    await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": list(streams)}))


async def _frames(ws: trio_websocket.WebSocketConnection, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        out.append(json.loads(await ws.get_message()))
    return out


async def _drain_until_closed(ws: trio_websocket.WebSocketConnection) -> tuple[list[str], int]:
    """Every message until the server closes; returns them and the close code."""
    got: list[str] = []
    while True:
        try:
            got.append(str(await ws.get_message()))
        except trio_websocket.ConnectionClosed as exc:
            return got, exc.reason.code if exc.reason is not None else -1


def _apply(book: dict[Decimal, Decimal], levels: list[list[str]]) -> None:
    for price, size in levels:
        if Decimal(size) == 0:
            book.pop(Decimal(price), None)
        else:
            book[Decimal(price)] = Decimal(size)


async def _depth_run(seed: int) -> list[str]:
    ex = SimExchange(seed=seed, markets=["BTC_USDC"], config=SimConfig(rate=200))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ex.run)
        ws = await ex.connect_memory_ws(nursery)
        await _subscribe(ws, "depth.BTC_USDC", "trade.BTC_USDC")
        frames = [str(await ws.get_message()) for _ in range(300)]
        nursery.cancel_scope.cancel()
    return frames


async def test_same_seed_same_frames(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        first = await _depth_run(3)
        second = await _depth_run(3)
        other = await _depth_run(4)
    assert first == second
    assert first != other
    # Frames are compact JSON with sorted keys, exactly as recorded on the wire.
    sample = json.loads(first[0])
    assert first[0] == json.dumps(sample, separators=(",", ":"), sort_keys=True)


async def test_stream_continuity_and_book_matches_ground_truth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ex = _exchange(rate=100)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await _subscribe(ws, "depth.SOL_USDC")
            first = (await _frames(ws, 1))[0]["data"]
            snap = (await ex.handle_http("GET", "/api/v1/depth", "symbol=SOL_USDC")).json()
            last_id = int(snap["lastUpdateId"])
            bids = {Decimal(p): Decimal(s) for p, s in snap["bids"]}
            asks = {Decimal(p): Decimal(s) for p, s in snap["asks"]}
            prev_u = first["u"]
            assert first["U"] <= last_id + 1
            merged = 0
            for frame in await _frames(ws, 400):
                data = frame["data"]
                assert frame["stream"] == "depth.SOL_USDC"
                assert data["U"] == prev_u + 1
                merged += data["u"] > data["U"]
                prev_u = data["u"]
                if data["u"] <= last_id:
                    continue
                _apply(bids, data["b"])
                _apply(asks, data["a"])
                truth_bids, truth_asks = ex.book_at("SOL_USDC", data["u"])
                assert sorted(bids.items(), reverse=True) == truth_bids
                assert sorted(asks.items()) == truth_asks
                assert truth_bids[0][0] < truth_asks[0][0]
            assert merged > 0
            nursery.cancel_scope.cancel()


async def test_rest_depth_format_like_fixtures(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange()
    with trio.fail_after(10):
        resp = await ex.handle_http("GET", "/api/v1/depth?symbol=SOL_USDC&limit=20")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert sorted(body) == ["asks", "bids", "lastUpdateId", "timestamp"]
    assert body["lastUpdateId"] == str(ex.last_update_id("SOL_USDC"))
    assert isinstance(body["timestamp"], int)
    assert body["timestamp"] > 1_700_000_000_000_000
    assert len(body["bids"]) == len(body["asks"]) == 20
    for side in ("bids", "asks"):
        prices = [Decimal(p) for p, _ in body[side]]
        assert prices == sorted(prices)
        for price, size in body[side]:
            assert len(price.split(".")[1]) == 2
            assert len(size.split(".")[1]) == 2
    truth_bids, truth_asks = ex.book_at("SOL_USDC", int(body["lastUpdateId"]))
    assert [(Decimal(p), Decimal(s)) for p, s in reversed(body["bids"])] == truth_bids[:20]
    assert [(Decimal(p), Decimal(s)) for p, s in body["asks"]] == truth_asks[:20]
    assert resp.body == json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    full = (await ex.handle_http("GET", "/api/v1/depth", "symbol=BTC_USDC")).json()
    assert len(full["bids"]) == len(ex.book_at("BTC_USDC", ex.last_update_id("BTC_USDC"))[0])
    assert all(len(p.split(".")[1]) == 1 and len(s.split(".")[1]) == 5 for p, s in full["asks"])


async def test_rest_errors_and_misc_endpoints(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange()
    ex.generate(200)
    bad_limit = await ex.handle_http("GET", "/api/v1/depth", "symbol=SOL_USDC&limit=7")
    assert bad_limit.status == 400
    assert bad_limit.json()["code"] == "INVALID_CLIENT_REQUEST"
    assert "failed to parse parameter `limit`" in bad_limit.json()["message"]
    bad_symbol = await ex.handle_http("GET", "/api/v1/depth", "symbol=DOGE_USDC")
    assert (bad_symbol.status, bad_symbol.json()["code"]) == (400, "INVALID_SYMBOL")
    missing = await ex.handle_http("GET", "/api/v1/nope")
    assert (missing.status, missing.json()["code"]) == (404, "RESOURCE_NOT_FOUND")
    time_resp = await ex.handle_http("GET", "/api/v1/time")
    assert time_resp.headers["content-type"].startswith("text/plain")
    assert time_resp.text.isdigit()
    assert (await ex.handle_http("GET", "/api/v1/ping")).text == "pong"
    assert (await ex.handle_http("GET", "/api/v1/status")).json() == {
        "message": None,
        "status": "Ok",
    }
    assert (await ex.handle_http("GET", "/api/v1/securities")).json() == []
    spot = (await ex.handle_http("GET", "/api/v1/markets", "marketType=SPOT")).json()
    assert [m["symbol"] for m in spot] == ["BTC_USDC", "SOL_USDC"]
    both = SimExchange(seed=1, markets=["BTC_USDC", "BTC_USDC_PERP", "ETH_USDT"])
    perp = await both.handle_http("GET", "/api/v1/markets", "marketType=PERP&marketType=SPOT")
    assert len(perp.json()) == 3
    only_perp = (await both.handle_http("GET", "/api/v1/markets", "marketType=PERP")).json()
    assert [m["symbol"] for m in only_perp] == ["BTC_USDC_PERP"]
    trades = (await ex.handle_http("GET", "/api/v1/trades", "symbol=SOL_USDC&limit=5")).json()
    truth = ex.trades("SOL_USDC")
    assert [t["id"] for t in trades] == [t.id for t in reversed(truth[-5:])]
    assert trades[0]["timestamp"] == truth[-1].engine_time_us // 1000
    assert Decimal(trades[0]["price"]) == truth[-1].price
    hist = await ex.handle_http("GET", "/api/v1/trades/history", "symbol=SOL_USDC&limit=3&offset=2")
    assert [t["id"] for t in hist.json()] == [t.id for t in reversed(truth[-5:-2])]
    ticker = (await ex.handle_http("GET", "/api/v1/ticker", "symbol=SOL_USDC")).json()
    assert "code" not in ticker
    assert ticker["trades"] == str(len(truth))
    assert Decimal(ticker["lastPrice"]) == truth[-1].price
    tickers = (await ex.handle_http("GET", "/api/v1/tickers")).json()
    assert [t["symbol"] for t in tickers] == ["BTC_USDC", "SOL_USDC"]


async def test_unknown_stream_error_and_no_ack(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await _subscribe(ws, "trade.SOL_USDC", "depth.NOPE_USDC")
            error = json.loads(await ws.get_message())
            assert error == {"id": None, "error": {"code": 4006, "message": "Invalid stream"}}
            # No acknowledgement for the valid stream: the next frame is data.
            ex.generate(50, "SOL_USDC")
            frame = json.loads(await ws.get_message())
            assert frame["stream"] == "trade.SOL_USDC"
            assert frame["data"]["t"] == ex.trades("SOL_USDC")[0].id
            nursery.cancel_scope.cancel()


async def test_aggregated_depth_stream_merges_contiguously(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ex = _exchange(rate=100)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await _subscribe(ws, "depth.200ms.SOL_USDC")
            frames = [f["data"] for f in await _frames(ws, 10)]
            nursery.cancel_scope.cancel()
    for prev, cur in itertools.pairwise(frames):
        assert cur["U"] == prev["u"] + 1
    assert all(f["u"] - f["U"] >= 5 for f in frames)
    bids, asks = ex.book_at("SOL_USDC", frames[0]["U"] - 1)
    book_b, book_a = dict(bids), dict(asks)
    for f in frames:
        _apply(book_b, f["b"])
        _apply(book_a, f["a"])
    truth_b, truth_a = ex.book_at("SOL_USDC", frames[-1]["u"])
    assert sorted(book_b.items(), reverse=True) == truth_b
    assert sorted(book_a.items()) == truth_a


async def _depth_frames_with_fault(
    fault: str, expect: int, n: int = 12
) -> tuple[SimExchange, list[dict[str, Any]]]:
    """Generate 3 messages, arm ``fault``, generate the rest; returns ``expect`` frames."""
    ex = _exchange(autostart=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ex.run)
        ws = await ex.connect_memory_ws(nursery)
        await _subscribe(ws, "depth.SOL_USDC")
        await trio.sleep(0.1)
        ex.generate(3, "SOL_USDC")
        getattr(ex.faults, fault)(symbol="SOL_USDC")
        ex.generate(n - 3, "SOL_USDC")
        frames = [f["data"] for f in await _frames(ws, expect)]
        nursery.cancel_scope.cancel()
    return ex, frames


async def test_fault_drop_makes_exactly_one_gap(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        ex, frames = await _depth_frames_with_fault("drop_delta", expect=11)
    pairs = list(itertools.pairwise(frames))
    gaps = [i for i, (a, b) in enumerate(pairs) if b["U"] != a["u"] + 1]
    assert gaps == [2]
    # The missing ids are exactly one message: the exchange applied it (ground truth moved on).
    missing_first, missing_last = frames[2]["u"] + 1, frames[3]["U"] - 1
    assert missing_first <= missing_last
    assert ex.faults.injected["drop"] == 1
    assert ex.last_update_id("SOL_USDC") == frames[-1]["u"]


async def test_fault_duplicate(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        ex, frames = await _depth_frames_with_fault("duplicate_delta", expect=13)
    assert frames[3] == frames[4]
    rest = frames[:4] + frames[5:]
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(rest))
    assert ex.faults.injected["duplicate"] == 1


async def test_fault_reorder(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        ex, frames = await _depth_frames_with_fault("reorder_deltas", expect=12)
    assert frames[4]["U"] == frames[2]["u"] + 1
    assert frames[3]["U"] == frames[4]["u"] + 1
    assert frames[5]["U"] == frames[3]["u"] + 1
    assert ex.faults.injected["reorder"] == 1


async def test_fault_stall_holds_then_releases(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await _subscribe(ws, "depth.SOL_USDC")
            await trio.sleep(0.1)
            ex.faults.stall(5.0, symbol="SOL_USDC")
            start = trio.current_time()
            ex.generate(4, "SOL_USDC")
            frames = [f["data"] for f in await _frames(ws, 4)]
            waited = trio.current_time() - start
            nursery.cancel_scope.cancel()
    assert 5.0 <= waited < 5.5
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(frames))
    assert ex.faults.injected["stall"] == 1


async def test_fault_disconnect_after_frames(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await _subscribe(ws, "depth.SOL_USDC")
            await trio.sleep(0.1)
            ex.faults.disconnect_after(frames=5)
            ex.generate(20, "SOL_USDC")
            got, code = await _drain_until_closed(ws)
            nursery.cancel_scope.cancel()
    assert len(got) == 5
    assert code == 1011
    assert ex.faults.injected["disconnect"] == 1


async def test_fault_malformed_frame(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            ws = await ex.connect_memory_ws(nursery)
            await _subscribe(ws, "depth.SOL_USDC")
            await trio.sleep(0.1)
            ex.faults.malformed_frame(symbol="SOL_USDC")
            ex.generate(2, "SOL_USDC")
            raw = [str(await ws.get_message()) for _ in range(3)]
            nursery.cancel_scope.cancel()
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[0])
    first, second = json.loads(raw[1])["data"], json.loads(raw[2])["data"]
    assert second["U"] == first["u"] + 1
    assert raw[1].startswith(raw[0])
    assert ex.faults.injected["malformed"] == 1


async def test_fault_refuse_handshake_then_accept(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False)
    ex.faults.refuse_handshake(count=2, status=503)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                with pytest.raises(trio_websocket.ConnectionRejected) as info:
                    await ex.connect_memory_ws(nursery)
                assert info.value.status_code == 503
            ws = await ex.connect_memory_ws(nursery)
            await ws.aclose()
            nursery.cancel_scope.cancel()
    assert ex.faults.injected["refuse_handshake"] == 2


async def test_http_faults(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False)
    ex.faults.http_429(count=2, retry_after=7)
    for _ in range(2):
        resp = await ex.handle_http("GET", "/api/v1/status")
        assert resp.status == 429
        assert resp.headers["retry-after"] == "7"
        assert resp.json()["code"] == "TOO_MANY_REQUESTS"
    assert (await ex.handle_http("GET", "/api/v1/status")).status == 200
    ex.faults.http_5xx(count=1, status=502)
    assert (await ex.handle_http("GET", "/api/v1/status")).status == 502
    assert (await ex.handle_http("GET", "/api/v1/status")).status == 200
    ex.faults.slow_responses(delay=3.0, count=1)
    start = trio.current_time()
    assert (await ex.handle_http("GET", "/api/v1/status")).status == 200
    assert trio.current_time() - start == pytest.approx(3.0)
    ex.faults.http_451()
    for path in ("/api/v1/status", "/api/v1/depth", "/api/v1/markets", "/nothing"):
        assert (await ex.handle_http("GET", path, "symbol=SOL_USDC")).status == 451
    async with trio.open_nursery() as nursery:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            await ex.connect_memory_ws(nursery)
        assert info.value.status_code == 451
    ex.faults.http_451(enabled=False)
    assert (await ex.handle_http("GET", "/api/v1/status")).status == 200
    assert ex.faults.injected["http_429"] == 2
    assert ex.faults.injected["http_5xx"] == 1
    assert ex.faults.injected["slow"] == 1
    assert ex.faults.injected["http_451"] == 5


async def test_rate_limit_per_client(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False, rate_limit=True, history_rate_limit_per_minute=3)
    q = "symbol=SOL_USDC"
    statuses = [(await ex.handle_http("GET", "/api/v1/trades/history", q)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert (await ex.handle_http("GET", "/api/v1/trades/history", q, client="b")).status == 200
    await trio.sleep(61)
    assert (await ex.handle_http("GET", "/api/v1/trades/history", q)).status == 200


async def test_slow_client_is_dropped_not_blocking(autojump_clock: trio.testing.MockClock) -> None:
    ex = _exchange(autostart=False, client_queue_size=5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run)
            slow = await ex.connect_memory_ws(nursery)
            await _subscribe(slow, "depth.SOL_USDC")
            await trio.sleep(0.1)
            # The memory transport buffers writes, so flood far more than the queue holds at once.
            ex.generate(50, "SOL_USDC")
            assert ex.stats["slow_clients_dropped"] == 1
            ex.generate(5, "SOL_USDC")
            raw, code = await _drain_until_closed(slow)
            received = [json.loads(r)["data"] for r in raw]
            nursery.cancel_scope.cancel()
    assert code == 1008
    assert len(received) <= 5
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(received))
