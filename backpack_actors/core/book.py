"""A level-2 order book with absolute level sizes, kept as the exchange's decimal text.

Each side maps a price's text to its size's text, plus two parallel lists in price order: the
prices' ``Decimal`` values (for ``bisect``) and their texts. Most deltas change the size of a
level already in the book: one ``str``-keyed dict store and a cheap validity check of the size,
no ``Decimal`` at all. A new price costs one ``Decimal`` parse and an insertion; a removed one a
``bisect`` and a deletion. Best bid/ask are O(1), ``depth(n)`` is O(n).

A price spelled two ways (``"1.50"`` and ``"1.5"``) is one level: a spelling the book has not
seen is parsed and matched by value, so only the first spelling is kept. Every text is checked
before the book changes; a bad level raises :class:`InvalidLevel`, after which the caller must
treat the book as unknown (levels before the bad one in the same call were applied).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from decimal import Decimal

from backpack_actors.core.dectext import (
    RawLevel,
    decimal_text,
    parse_price,
    parse_size,
)

__all__ = ["AnyLevel", "InvalidLevel", "OrderBook", "RawLevel"]

AnyLevel = tuple[str | Decimal, str | Decimal]
"""A level as text (fast) or as ``Decimal`` values (accepted, slower)."""


class InvalidLevel(ValueError):
    """A level whose price or size is not a valid decimal (the message names the text)."""


def _parse_level(price: str, size: str) -> tuple[Decimal, bool]:
    """The price's value and whether the size is zero; :class:`InvalidLevel` on bad text."""
    try:
        return parse_price(price), parse_size(size) == 0
    except (ValueError, TypeError) as exc:
        raise InvalidLevel(f"bad level [{price!r:.60}, {size!r:.60}]: {exc}") from None


def _level_text(price: str | Decimal, size: str | Decimal) -> tuple[str, str]:
    """A level as text; :class:`InvalidLevel` for a ``Decimal`` outside the bounds.

    ``decimal_text`` refuses to write out such a value (it could take gigabytes), so it is
    refused here, before the book changes, like any other bad level.
    """
    try:
        return decimal_text(price), decimal_text(size)
    except (ValueError, TypeError) as exc:
        raise InvalidLevel(f"bad level: {exc}") from None


class _Side:
    __slots__ = ("prices", "sizes", "texts", "values")

    def __init__(self) -> None:
        self.sizes: dict[str, str] = {}
        # Price text -> value, for finding a level's place when it is removed.
        self.values: dict[str, Decimal] = {}
        # Ascending prices and their texts, parallel.
        self.prices: list[Decimal] = []
        self.texts: list[str] = []

    def apply(self, levels: Iterable[AnyLevel]) -> bool:
        """Apply levels; True when a new price was inserted (only that can cross the book)."""
        sizes = self.sizes
        inserted = False
        for price, size in levels:
            # Hot: a known level (text) with a plain size; the test is inlined from dectext,
            # length bound included (longer plain text must go through the bounds check).
            try:
                plain = (
                    price in sizes
                    and len(size) <= 40  # type: ignore[arg-type]  # dectext.MAX_PLAIN
                    and size.isascii()  # type: ignore[union-attr]
                    and size.replace(".", "", 1).isdigit()  # type: ignore[union-attr]
                )
            except (AttributeError, TypeError):
                # A Decimal size with a text price: the slow path normalizes it (a try costs
                # nothing here until it catches).
                plain = False
            if plain:
                if size.strip("0."):  # type: ignore[union-attr]
                    sizes[price] = size  # type: ignore[index,assignment]
                else:
                    self._remove(price)  # type: ignore[arg-type]
            elif self._slow_level(price, size):
                inserted = True
        return inserted

    def _remove(self, price: str) -> None:
        del self.sizes[price]
        index = bisect_left(self.prices, self.values.pop(price))
        del self.prices[index]
        del self.texts[index]

    def _slow_level(self, price_in: str | Decimal, size_in: str | Decimal) -> bool:
        # Everything but a known price with a plain size: new prices, other spellings, Decimal
        # levels, sizes with exponents or signs, and bad text (InvalidLevel).
        price, size = _level_text(price_in, size_in)
        value, zero = _parse_level(price, size)
        prices = self.prices
        index = bisect_left(prices, value)
        if index < len(prices) and prices[index] == value:
            # Known, perhaps under another spelling: the level keeps its first spelling.
            known = self.texts[index]
            if zero:
                self._remove(known)
            else:
                self.sizes[known] = size
            return False
        if zero:
            # Removing an absent level is a no-op: absolute levels make deletes idempotent.
            return False
        prices.insert(index, value)
        self.texts.insert(index, price)
        self.values[price] = value
        self.sizes[price] = size
        return True

    def load(self, levels: Iterable[AnyLevel]) -> None:
        by_value: dict[Decimal, tuple[str, str]] = {}
        for price, size in levels:
            p_text, s_text = _level_text(price, size)
            value, zero = _parse_level(p_text, s_text)
            if zero:
                by_value.pop(value, None)
            else:
                # Like apply: a price keeps its first spelling, and takes the last size.
                known = by_value.get(value)
                by_value[value] = (p_text if known is None else known[0], s_text)
        self.prices = sorted(by_value)
        self.texts = [by_value[v][0] for v in self.prices]
        self.values = {by_value[v][0]: v for v in self.prices}
        self.sizes = {p: s for p, s in by_value.values()}

    def best_first(self, n: int | None, descending: bool) -> tuple[RawLevel, ...]:
        sizes = self.sizes
        texts = self.texts
        if n is not None and n <= 0:
            return ()
        if descending:
            chosen = texts[::-1] if n is None else texts[: -n - 1 : -1]
        else:
            chosen = texts if n is None else texts[:n]
        return tuple([(p, sizes[p]) for p in chosen])

    def as_dict(self) -> dict[Decimal, Decimal]:
        return {
            value: Decimal(self.sizes[text])
            for value, text in zip(self.prices, self.texts, strict=True)
        }

    def copy(self) -> _Side:
        other = _Side()
        other.sizes = dict(self.sizes)
        other.values = dict(self.values)
        other.prices = list(self.prices)
        other.texts = list(self.texts)
        return other


class OrderBook:
    """Both sides of one market's book, as exact decimal text (see the module docstring)."""

    __slots__ = ("_asks", "_bids")

    def __init__(self) -> None:
        self._bids = _Side()
        self._asks = _Side()

    def load(
        self,
        bids: Iterable[AnyLevel],
        asks: Iterable[AnyLevel],
    ) -> None:
        """Replace the whole book (any level order; zero sizes are skipped; Decimals accepted)."""
        bid_side, ask_side = _Side(), _Side()
        bid_side.load(bids)
        ask_side.load(asks)
        self._bids, self._asks = bid_side, ask_side

    def adopt(self, other: OrderBook) -> None:
        """Take ``other``'s levels (``other`` must not be used afterwards).

        Lets a caller build and check a candidate book before this one changes, while every
        holder of this object keeps seeing the current book.
        """
        self._bids, self._asks = other._bids, other._asks

    def clear(self) -> None:
        """Remove every level."""
        self._bids, self._asks = _Side(), _Side()

    def apply(self, bids: Sequence[AnyLevel], asks: Sequence[AnyLevel]) -> bool:
        """Set absolute level sizes; a zero size deletes the level.

        Levels as text (events' ``raw_bids``/``raw_asks``) take the fast path; ``Decimal`` pairs
        (``delta.bids``) are accepted and normalized to text.

        Returns True when a new price level was inserted (the only change that can cross the
        book). Raises :class:`InvalidLevel` on a bad level (see the module docstring).
        """
        # One side is often empty: skipping its call is measurable on the hot path.
        inserted = self._bids.apply(bids) if bids else False
        if asks and self._asks.apply(asks):
            return True
        return inserted

    def best_bid(self) -> RawLevel | None:
        """Highest bid ``(price, size)`` as text, or None when there are no bids."""
        side = self._bids
        if not side.texts:
            return None
        price = side.texts[-1]
        return price, side.sizes[price]

    def best_ask(self) -> RawLevel | None:
        """Lowest ask ``(price, size)`` as text, or None when there are no asks."""
        side = self._asks
        if not side.texts:
            return None
        price = side.texts[0]
        return price, side.sizes[price]

    def depth(self, n: int | None = None) -> tuple[tuple[RawLevel, ...], tuple[RawLevel, ...]]:
        """The best ``n`` levels per side (all when None) as text: ``(bids, asks)``, best first."""
        return self._bids.best_first(n, True), self._asks.best_first(n, False)

    def levels_within(
        self, bid_floor: Decimal | None, ask_ceiling: Decimal | None
    ) -> tuple[int, int]:
        """How many bids are at or above ``bid_floor`` and asks at or below ``ask_ceiling``.

        The bounds are a book's valid price window (a None bound: that whole side is known);
        levels beyond them may be missing, so only this many best levels can be vouched for.
        """
        bids, asks = self._bids.prices, self._asks.prices
        nb = len(bids) if bid_floor is None else len(bids) - bisect_left(bids, bid_floor)
        na = len(asks) if ask_ceiling is None else bisect_right(asks, ask_ceiling)
        return nb, na

    def within(self, n: int, bid_floor: Decimal | None, ask_ceiling: Decimal | None) -> bool:
        """Whether this book's top ``n`` levels per side all lie inside the valid window."""
        nb, na = self.levels_within(bid_floor, ask_ceiling)
        return (bid_floor is None or nb >= n) and (ask_ceiling is None or na >= n)

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask (an impossible book)."""
        bids = self._bids.prices
        asks = self._asks.prices
        return bool(bids and asks) and bids[-1] >= asks[0]

    def top_matches(
        self,
        bids: Iterable[AnyLevel],
        asks: Iterable[AnyLevel],
    ) -> bool:
        """True when the given levels (any order, zeros ignored) equal this book's best levels.

        A REST snapshot may be truncated to its ``limit`` levels per side, so only as many of the
        book's best levels are compared as the snapshot holds per side.
        """
        snap = OrderBook()
        snap.load(bids, asks)
        return _top_matches(self._bids, snap._bids, True) and _top_matches(
            self._asks, snap._asks, False
        )

    @property
    def bid_count(self) -> int:
        """Number of bid levels."""
        return len(self._bids.texts)

    @property
    def ask_count(self) -> int:
        """Number of ask levels."""
        return len(self._asks.texts)

    def __len__(self) -> int:
        return self.bid_count + self.ask_count

    def as_dicts(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """``(bids, asks)`` as ``Decimal`` price -> size dicts (value comparisons, any spelling)."""
        return self._bids.as_dict(), self._asks.as_dict()

    def copy(self) -> OrderBook:
        """An independent copy."""
        other = OrderBook()
        other._bids = self._bids.copy()
        other._asks = self._asks.copy()
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OrderBook):
            return NotImplemented
        return self.as_dicts() == other.as_dicts()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        bid = self.best_bid()
        ask = self.best_ask()
        return (
            f"OrderBook(bids={self.bid_count}, asks={self.ask_count}, "
            f"best_bid={bid[0] if bid else None}, best_ask={ask[0] if ask else None})"
        )


def _top_matches(mine: _Side, snap: _Side, descending: bool) -> bool:
    count = len(snap.prices)
    if len(mine.prices) < count:
        return False
    if descending:
        pairs = zip(mine.prices[::-1][:count], mine.texts[::-1][:count], strict=True)
    else:
        pairs = zip(mine.prices[:count], mine.texts[:count], strict=True)
    snap_sizes = snap.as_dict()
    return all(snap_sizes.get(value) == Decimal(mine.sizes[text]) for value, text in pairs)
