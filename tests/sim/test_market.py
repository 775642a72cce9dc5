"""Pure market model: determinism, continuity, never crossed, ground truth, formatting."""

from __future__ import annotations

from decimal import Decimal

from backpack_actors.sim.market import (
    DEFAULT_MARKETS,
    MarketModel,
    ModelParams,
    format_padded,
    format_stripped,
)

BTC = DEFAULT_MARKETS[0]
SOL = DEFAULT_MARKETS[2]


def _apply(book: dict[Decimal, Decimal], levels: list[tuple[str, str]]) -> None:
    for price, size in levels:
        if Decimal(size) == 0:
            book.pop(Decimal(price), None)
        else:
            book[Decimal(price)] = Decimal(size)


def test_same_seed_same_messages_and_different_seed_differs() -> None:
    a, b, c = MarketModel(BTC, 7), MarketModel(BTC, 7), MarketModel(BTC, 8)
    msgs_a = [a.next_message(i) for i in range(500)]
    msgs_b = [b.next_message(i) for i in range(500)]
    msgs_c = [c.next_message(i) for i in range(500)]
    assert msgs_a == msgs_b
    assert [m.bids for m in msgs_a] != [m.bids for m in msgs_c]


def test_ids_contiguous_merges_and_empty_messages_occur() -> None:
    model = MarketModel(SOL, 3)
    prev = model.last_update_id
    merged = empty = 0
    for i in range(3000):
        msg = model.next_message(i)
        assert msg.first_id == prev + 1
        assert msg.last_id >= msg.first_id
        merged += msg.last_id > msg.first_id
        empty += not msg.bids and not msg.asks
        prev = msg.last_id
    assert merged > 0
    assert empty > 0


def test_never_crossed_and_hundreds_of_levels() -> None:
    model = MarketModel(BTC, 11)
    for i in range(5000):
        model.next_message(i)
        assert model.best_bid() < model.best_ask()
    assert len(model.bids) >= 150
    assert len(model.asks) >= 150


def test_book_at_equals_book_rebuilt_from_messages() -> None:
    model = MarketModel(BTC, 5, ModelParams(checkpoint_interval=97))
    bids_t, asks_t = model.book_at(model.last_update_id)
    bids = dict(bids_t)
    asks = dict(asks_t)
    for i in range(1500):
        msg = model.next_message(i)
        _apply(bids, msg.bids)
        _apply(asks, msg.asks)
        if i % 37 == 0 or i == 1499:
            truth_bids, truth_asks = model.book_at(msg.last_id)
            assert truth_bids == sorted(bids.items(), reverse=True)
            assert truth_asks == sorted(asks.items())


def test_trades_consume_resting_liquidity_in_the_same_message() -> None:
    model = MarketModel(SOL, 2)
    checked = 0
    for i in range(2000):
        before = model.book_at(model.last_update_id)
        msg = model.next_message(i)
        if not msg.trades or msg.last_id != msg.first_id:
            continue
        t = msg.trades[0]
        resting = dict(before[1] if not t.is_buyer_maker else before[0])
        changed = dict(msg.asks if not t.is_buyer_maker else msg.bids)
        assert t.price in resting
        assert Decimal(changed[format_padded(int(t.price * 100), 2)]) == resting[t.price] - sum(
            x.quantity for x in msg.trades if x.price == t.price
        )
        assert t.quote_quantity == t.price * t.quantity
        checked += 1
    assert checked > 50
    ids = [t.id for t in model.trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_history_is_trimmed_but_stays_exact() -> None:
    model = MarketModel(SOL, 4, ModelParams(checkpoint_interval=50, max_history=200))
    for i in range(1000):
        model.next_message(i)
    assert model.first_known_update_id > model.last_update_id - 1000
    model.book_at(model.first_known_update_id)
    fresh = MarketModel(SOL, 4, ModelParams(checkpoint_interval=50, max_history=10_000))
    for i in range(1000):
        fresh.next_message(i)
    uid = model.last_update_id - 120
    assert model.book_at(uid) == fresh.book_at(uid)


def test_formatting_padded_and_stripped() -> None:
    assert format_padded(17970, 2) == "179.70"
    assert format_padded(0, 5) == "0.00000"
    assert format_padded(110, 2) == "1.10"
    assert format_padded(-5, 3) == "-0.005"
    assert format_stripped(16740, 2) == "167.4"
    assert format_stripped(17500, 2) == "175"
    assert format_stripped(1000, 4) == "0.1"
    assert format_stripped(0, 2) == "0"
