"""Issue 12: trade continuity that a hostile or broken peer cannot poison.

Scenario tests for each way trades used to be lost silently (a far-future id, ids going
backwards, a malformed trade holding every later one), then a property test against a model of
the exchange: eras of trade ids (an engine reset starts a new one), a live stream with drops,
duplicates, reordering, malformed trades and bogus far-future ids, and a REST backfill that answers
fully, partly, late or not at all, driven the way the reconciler drives TradeSync.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core.events import Side, StatusKind
from backpack_actors.core.sync import Malformed, Status
from backpack_actors.core.trades import (
    TRADE_RESET_RUN,
    EmitTrade,
    RequestBackfill,
    TradeAction,
    TradeSync,
)

SYM = "SOL_USDC"
BOGUS = 2**63 - 1


@dataclass(frozen=True)
class Live:
    trade_id: int
    price: str = "150.25"
    quantity: str = "1"
    buyer_is_maker: bool = False
    event_time: int = 0
    engine_time: int = 0


@dataclass(frozen=True)
class Rest:
    id: int
    price: Decimal
    quantity: Decimal
    timestamp: int = 1
    is_buyer_maker: bool = True


def emitted(actions: list[TradeAction]) -> list[int]:
    return [a.trade_id for a in actions if isinstance(a, EmitTrade)]


def statuses(actions: list[TradeAction], kind: StatusKind) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Status) and a.kind is kind]


def feed(sync: TradeSync, *tids: int) -> list[TradeAction]:
    out: list[TradeAction] = []
    for t in tids:
        out += sync.on_trade(1, Live(t))
    return out


def rest(t: int) -> Rest:
    return Rest(t, Decimal("150.25"), Decimal(1))


# -- (a) a far-future id ------------------------------------------------------------------------


def test_a_far_future_id_does_not_turn_later_trades_into_duplicates() -> None:
    sync = TradeSync(SYM)
    acts = feed(sync, 10, 11, BOGUS)
    assert emitted(acts) == [10, 11, BOGUS]
    real = list(range(12, 12 + TRADE_RESET_RUN + 50))
    acts = feed(sync, *real)
    # Every real trade is emitted, once, when it arrives; none is taken for a duplicate.
    assert emitted(acts) == real
    assert sync.counters["duplicates"] == 0
    (reset,) = statuses(acts, StatusKind.TRADE_ID_RESET)
    high = 12 + TRADE_RESET_RUN - 1
    assert reset == (
        f"trade ids continue below the last id {BOGUS}: {TRADE_RESET_RUN} trades in 12..{high} "
        f"arrived since; following them (ids {high + 1}..{BOGUS - 1} no longer awaited)"
    )
    assert sync.counters["id_resets"] == 1
    # The real sequence is followed again, fast path included, and no backfill is left open.
    assert sync.last_trade_id == real[-1]
    assert sync.accept_in_order(Live(real[-1] + 1))
    assert sync.pending is None
    assert sync.gaps == ()
    # A replay of the bogus frame is still a duplicate, not a new jump.
    assert feed(sync, BOGUS) == []


def test_a_far_future_id_between_gaps_keeps_the_real_gaps() -> None:
    sync = TradeSync(SYM, reset_run=5)
    feed(sync, 10, 13)  # a real gap 11..12, asked for
    assert sync.pending == (11, 12)
    feed(sync, 10**12)  # bogus: queued gap 14..10**12-1
    acts = feed(sync, 14, 15, 16, 17, 18)
    assert emitted(acts) == [14, 15, 16, 17, 18]
    assert len(statuses(acts, StatusKind.TRADE_ID_RESET)) == 1
    assert sync.gaps == ((11, 12),), "the real gap is still awaited"
    # The backfill in flight was for 11..12: asked again (the reconciler re-asks on mismatch).
    assert [a for a in acts if isinstance(a, RequestBackfill)] == [RequestBackfill(SYM, 11, 12, 18)]
    acts = sync.on_backfill([rest(12), rest(11)])
    assert emitted(acts) == [11, 12]


# -- (b) ids going backwards --------------------------------------------------------------------


def test_ids_going_backwards_are_reported_and_followed() -> None:
    sync = TradeSync(SYM)
    feed(sync, *range(1000, 1011))
    # An engine reset: ids restart at 1. They look like duplicates until the run is long enough.
    acts = feed(sync, *range(1, TRADE_RESET_RUN + 21))
    (reset,) = statuses(acts, StatusKind.TRADE_ID_RESET)
    assert reset == (
        f"trade ids went backwards: {TRADE_RESET_RUN} trades in 1..{TRADE_RESET_RUN} at or below "
        "the last id 1010; following the new sequence"
    )
    # The run dropped as duplicates is reported and backfilled; what follows is emitted live.
    assert statuses(acts, StatusKind.TRADE_GAP) == [
        f"trade ids 1..{TRADE_RESET_RUN} missing ({TRADE_RESET_RUN}); backfilling"
    ]
    request = RequestBackfill(SYM, 1, TRADE_RESET_RUN, TRADE_RESET_RUN)
    assert [a for a in acts if isinstance(a, RequestBackfill)] == [request]
    assert emitted(acts) == list(range(TRADE_RESET_RUN + 1, TRADE_RESET_RUN + 21))
    acts = sync.on_backfill([rest(t) for t in range(1, TRADE_RESET_RUN + 5)])
    assert emitted(acts) == list(range(1, TRADE_RESET_RUN + 1))
    assert all(a.backfilled for a in acts if isinstance(a, EmitTrade))
    assert sync.gaps == ()
    assert sync.counters["id_resets"] == 1


def test_a_reset_gives_up_the_old_gaps_and_says_so() -> None:
    sync = TradeSync(SYM, reset_run=5)
    feed(sync, 1000, 1003)
    assert sync.pending == (1001, 1002)
    acts = feed(sync, 1, 2, 3, 4, 5)
    assert statuses(acts, StatusKind.TRADE_GAP) == [
        "2 trade ids unrecoverable: 1001..1002 (trade ids reset)",
        "trade ids 1..5 missing (5); backfilling",
    ]
    assert sync.pending == (1, 5)


def test_a_few_duplicates_are_only_duplicates() -> None:
    sync = TradeSync(SYM)
    feed(sync, *range(1, 50))
    acts = feed(sync, *range(40, 50), 50)
    assert emitted(acts) == [50]
    assert sync.counters["duplicates"] == 10
    assert statuses(acts, StatusKind.TRADE_ID_RESET) == []


# -- (c) a malformed trade holds nothing --------------------------------------------------------


def test_a_malformed_trade_holds_no_later_trade_and_a_failed_backfill_names_it() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10)
    acts = sync.on_trade(1, Live(11, price="NaN"))
    assert isinstance(acts[0], Malformed)
    assert acts[-1] == RequestBackfill(SYM, 11, 11, 11)
    later = list(range(12, 500))
    # Every later trade goes straight out (the fast path takes them), long before any answer.
    assert all(sync.accept_in_order(Live(t)) for t in later)
    assert sync.held == 0
    acts = sync.on_backfill_failed("HTTP 429")
    assert statuses(acts, StatusKind.TRADE_GAP) == [
        "1 trade ids unrecoverable: 11 (backfill failed: HTTP 429)"
    ]
    assert sync.gaps == ()
    assert sync.counters["unrecoverable"] == 1


def test_a_late_backfill_or_replay_never_emits_twice() -> None:
    sync = TradeSync(SYM)
    feed(sync, 10, 13)
    assert emitted(feed(sync, 12)) == [12], "a late live trade fills part of the gap"
    acts = sync.on_backfill([rest(11), rest(12), rest(13)])
    assert emitted(acts) == [11]
    assert feed(sync, 11, 12, 13) == []
    assert sync.on_backfill([rest(11)]) == []


# -- the property ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    era: int  # -1: a bogus trade
    trade_id: int
    bad: bool = False


@dataclass
class Scenario:
    arrivals: list[Arrival]
    # (era, ids produced in that era so far) after each arrival: what REST can answer then.
    produced: list[tuple[int, int, int]]
    answers: list[str]
    fast: bool


RESET_RUN = 5
REAL_IDS = 20_000
"""Every real id of a scenario is below this; bogus ones are far above."""


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    arrivals: list[Arrival] = []
    produced: list[tuple[int, int, int]] = []
    eras = draw(st.integers(1, 3))
    start = 10_000 + draw(st.integers(0, 50))
    for era in range(eras):
        n = draw(st.integers(RESET_RUN + 2, 40))
        if era:
            # A reset: the new ids lie below the old ones (so they are taken for duplicates
            # until the run shows otherwise).
            start = draw(st.integers(start - n - 1000, start - n - 1))
        # A new era's first trades arrive cleanly: a reset can only be recognised from a run of
        # trades, and trades indistinguishable from duplicates are otherwise lost by design.
        clean = RESET_RUN + 1 if era else 0
        for index in range(n):
            t = start + index
            fate = (
                "ok"
                if index < clean
                else draw(
                    st.sampled_from(["ok", "ok", "ok", "drop", "dup", "swap", "bad", "bogus"])
                )
            )
            if fate == "bogus" and arrivals:
                arrivals.append(Arrival(-1, 2**62 + draw(st.integers(0, 3))))
                produced.append((era, start, t - 1))
            if fate != "drop":
                arrivals.append(Arrival(era, t, bad=fate == "bad"))
                produced.append((era, start, t))
            if fate == "dup":
                arrivals.append(Arrival(era, draw(st.integers(max(start, t - 8), t))))
                produced.append((era, start, t))
            if fate == "swap" and len(arrivals) >= 2 and arrivals[-2].era == era:
                arrivals[-1], arrivals[-2] = arrivals[-2], arrivals[-1]
    answers = draw(
        st.lists(st.sampled_from(["later", "full", "partial", "fail"]), max_size=len(arrivals))
    )
    return Scenario(arrivals, produced, answers, draw(st.booleans()))


def price(era: int, trade_id: int) -> str:
    # Unique per (era, id): what identifies the true trade behind an emitted one.
    return f"{trade_id}.{era + 1 if era >= 0 else 9}"


SPAN = re.compile(r"(\d+)(?:\.\.(\d+))?")


def span_ids(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(", "):
        match = SPAN.fullmatch(part)
        assert match, part
        first = int(match[1])
        last = int(match[2] or first)
        # Far-future spans are huge; only real ids (all below REAL_IDS) can matter.
        out.update(range(first, min(last, REAL_IDS) + 1))
    return out


def reported(actions: list[TradeAction]) -> set[int]:
    """Ids reported unrecoverable, or no longer awaited after a bogus id was left behind."""
    out: set[int] = set()
    for a in actions:
        if not isinstance(a, Status):
            continue
        if a.kind is StatusKind.TRADE_GAP and " unrecoverable: " in a.reason:
            out |= span_ids(a.reason.split(" unrecoverable: ")[1].rsplit(" (", 1)[0])
        if a.kind is StatusKind.TRADE_ID_RESET and "(ids " in a.reason:
            out |= span_ids(a.reason.split("(ids ")[1].split(" no longer awaited")[0])
    return out


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_every_trade_once_exactly_as_sent_and_every_loss_reported(scenario: Scenario) -> None:
    sync = TradeSync(SYM, max_held=6, reset_run=RESET_RUN)
    out: list[TradeAction] = []
    in_flight: list[tuple[int, int]] = []  # the reconciler's one backfill in flight
    current = (0, 0, 0)
    choices = iter(scenario.answers)

    def run(actions: list[TradeAction]) -> None:
        out.extend(actions)
        for a in actions:
            if isinstance(a, RequestBackfill) and not in_flight:
                in_flight.append((a.first_missing, a.last_missing))

    def answer(how: str) -> None:
        # As the reconciler does (actors/reconciler.py, BackfillDone).
        asked = in_flight.pop()
        gap = sync.pending
        if gap is not None and gap != asked:
            in_flight.append(gap)
            return
        if how == "fail":
            run(sync.on_backfill_failed("boom"))
            return
        era, first, newest = current
        ids = range(max(asked[0], first), min(asked[1], newest) + 1)
        keep = [t for t in ids if how == "full" or t % 2]
        trades = [Rest(t, Decimal(price(era, t)), Decimal(1)) for t in reversed(keep)]
        run(sync.on_backfill(trades))

    for arrival, now in zip(scenario.arrivals, scenario.produced, strict=True):
        current = now
        trade = Live(
            arrival.trade_id, "NaN" if arrival.bad else price(arrival.era, arrival.trade_id)
        )
        if scenario.fast and sync.accept_in_order(trade):
            out.append(sync.from_live(trade))
        else:
            run(sync.on_trade(1, trade))
        how = next(choices, "later")
        if in_flight and how != "later":
            answer(how)
    while in_flight:
        answer("full")

    # Nothing is left open, so nothing can be lost at exit.
    assert sync.pending is None
    assert sync.gaps == ()
    truth = {price(a.era, a.trade_id): a for a in scenario.arrivals}
    for era, first, newest in scenario.produced:
        truth.update({price(era, t): Arrival(era, t) for t in range(first, newest + 1)})
    seen_emitted: set[tuple[int, int]] = set()
    for a in out:
        if not isinstance(a, EmitTrade):
            continue
        # Exactly a trade the exchange made, under its own id ...
        true = truth.get(a.price)
        assert true is not None, a
        assert true.trade_id == a.trade_id
        assert a.amount == "1"
        assert a.side is (Side.SELL if a.backfilled else Side.BUY)
        # ... and, for a real trade, at most once (a bogus id repeated across a reset cannot be
        # told from a new trade that reuses the id).
        assert true.era < 0 or (true.era, true.trade_id) not in seen_emitted, a
        seen_emitted.add((true.era, true.trade_id))
    # Every real id from the first one that arrived (the baseline: what came before it is no
    # concern of the feed's, even if it arrives late) to the newest, per era, is emitted or
    # reported.
    lost = reported(out)
    for era in {a.era for a in scenario.arrivals if a.era >= 0}:
        arrived = [a.trade_id for a in scenario.arrivals if a.era == era]
        for t in range(arrived[0], max(arrived) + 1):
            assert (era, t) in seen_emitted or t in lost, (era, t)


def test_the_record_stays_bounded_whatever_the_peer_sends() -> None:
    # A peer that slips in a new bogus id every few trades, leaves holes and never answers a
    # backfill: the record is bounded by max_held per part, and every real trade still goes out.
    sync = TradeSync(SYM, max_held=4, reset_run=3)
    out = feed(sync, 1)
    t = 1
    for incident in range(300):
        out += feed(sync, 2**62 + incident * 1000)
        for _ in range(5):
            t += 2  # every other id missing
            out += feed(sync, t)
        if incident % 7 == 0:
            out += sync.on_backfill_failed("HTTP 429")
        assert len(sync.gaps) <= 4
        assert sync.record_size <= 3 * 4
    real = [i for i in emitted(out) if i < 2**62]
    assert real == list(range(1, t + 1, 2))
    assert sync.counters["id_resets"] >= 290
