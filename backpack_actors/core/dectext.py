"""Decimal numbers kept as the exchange's text until somebody reads them.

Backpack sends prices and sizes as JSON strings (docs/protocol.md §1.3). The hot path keeps those
strings: building a ``Decimal`` costs ~170 ns and hashing a fresh one more, which was most of the
per-frame cost. Text is still checked before it is trusted, with a fast path for the plain
``digits[.digits]`` form the exchange sends and an exact ``Decimal`` fallback for anything else
(exponents, signs, NaN), so nothing malformed is ever applied and nothing valid is refused.
Text ``Decimal()`` would take but other parsers would not (surrounding spaces, ``_`` separators,
non-ASCII digits) is refused: what passes is published exactly as sent.

Every number is also bounded before any arithmetic or formatting is done with it. ``Decimal``
stores ``"1e999999999"`` in a few bytes, but writing it out as plain digits (``format(v, "f")``)
builds a gigabyte string, and comparing or hashing values of wildly different scale is no better.
A number is accepted only with at most :data:`MAX_DIGITS` significant digits, an exponent of at
least :data:`MIN_EXPONENT` (at most 40 decimal places) and an adjusted exponent of at most
:data:`MAX_ADJUSTED` (below ``1e41``); text longer than :data:`MAX_TEXT` is refused before it is
parsed at all. Real prices and sizes are nowhere near: ticks and steps are ``1e-10`` at the finest
and quantities below ``1e15``, so the bounds refuse only hostile or broken input. Plain text of
at most :data:`MAX_PLAIN` characters is always inside them (40 characters hold at most 40 digits,
39 decimal places and 40 integer digits), which keeps the fast path to one length comparison.

:class:`MarketBounds` narrows these to one market (docs/protocol.md §1.7): a price may have at most
the tick size's decimal places plus :data:`PLACES_SLACK` and at most :data:`PRICE_INTEGER_DIGITS`
integer digits, a size likewise from the step size and :data:`SIZE_INTEGER_DIGITS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

__all__ = [
    "MAX_ADJUSTED",
    "MAX_DIGITS",
    "MAX_PLAIN",
    "MAX_TEXT",
    "MIN_EXPONENT",
    "PLACES_SLACK",
    "PRICE_INTEGER_DIGITS",
    "SIZE_INTEGER_DIGITS",
    "MarketBounds",
    "RawLevel",
    "bounds_problem",
    "decimal_text",
    "is_price_text",
    "is_size_text",
    "parse_price",
    "parse_size",
    "size_is_zero",
]

RawLevel = tuple[str, str]
"""One ``(price, size)`` level as the exchange's decimal text."""

MAX_DIGITS: Final = 40
"""Most significant digits (coefficient digits, trailing zeros included) a number may have."""
MIN_EXPONENT: Final = -40
"""Smallest exponent: at most 40 decimal places."""
MAX_ADJUSTED: Final = 40
"""Largest adjusted exponent (the power of ten of the leading digit): values below ``1e41``."""
MAX_PLAIN: Final = 40
"""Plain ``digits[.digits]`` text up to this length is inside the bounds without parsing."""
MAX_TEXT: Final = 100
"""Longer text is refused unparsed (a bounded number needs ~50 characters in any spelling)."""

_ZERO: Final = Decimal(0)


def bounds_problem(
    value: Decimal,
    *,
    max_digits: int = MAX_DIGITS,
    min_exponent: int = MIN_EXPONENT,
    max_adjusted: int = MAX_ADJUSTED,
) -> str | None:
    """Why the finite ``value`` is outside the bounds (see the module docstring), or None.

    The keyword arguments allow tighter per-market bounds, e.g. ``min_exponent`` from a market's
    tick or step size. ``adjusted()`` is checked first: it is O(1) and refuses huge exponents
    without looking at the coefficient.
    """
    adjusted = value.adjusted()
    if adjusted > max_adjusted or adjusted < min_exponent:
        return f"adjusted exponent {adjusted} outside {min_exponent}..{max_adjusted}"
    if (
        adjusted >= -6
        and max_digits == MAX_DIGITS
        and min_exponent == MIN_EXPONENT
        and len(str(value)) <= MAX_DIGITS
    ):
        # as_tuple() costs ~450 ns, str() a third of that (REST snapshots check 10,000s of
        # values). From -6 on, str() writes every coefficient digit, and in plain notation
        # the leading "0.00…" too, so 40 characters mean <= 40 digits and <= 38 decimal places.
        return None
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: callers check is_finite() first
    if exponent < min_exponent:
        return f"more than {-min_exponent} decimal places"
    if len(digits) > max_digits:
        return f"more than {max_digits} significant digits"
    return None


def _plain(text: str) -> bool:
    # ASCII digits with at most one dot (and at least one digit): what Backpack sends; short
    # enough to be inside the bounds (see MAX_PLAIN).
    return len(text) <= MAX_PLAIN and text.isascii() and text.replace(".", "", 1).isdigit()


def _decimal(text: str, what: str) -> Decimal:
    # Decimal() also takes surrounding spaces, "_" separators and non-ASCII digits; text that is
    # published as sent must parse anywhere, so those are refused here. Overlong text is refused
    # before Decimal() spends time on it.
    if len(text) > MAX_TEXT or not text.isascii() or "_" in text or text != text.strip():
        raise ValueError(f"{what} {text!r} is not a decimal number")
    return Decimal(text)


def _bounded(value: Decimal, text: str, what: str) -> Decimal:
    problem = bounds_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {text!r} is out of bounds: {problem}")
    return value


def parse_size(text: str) -> Decimal:
    """The value of a size: a finite, bounded decimal >= 0, else ``ValueError`` naming the text."""
    try:
        value = _decimal(text, "size")
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"size {text!r:.{MAX_TEXT}} is not a decimal number") from None
    if not value.is_finite() or value < _ZERO:
        raise ValueError(f"size {text!r} must be a finite decimal >= 0")
    return _bounded(value, text, "size")


def parse_price(text: str) -> Decimal:
    """The value of a price: a finite, bounded decimal > 0, else ``ValueError`` naming the text."""
    try:
        value = _decimal(text, "price")
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"price {text!r:.{MAX_TEXT}} is not a decimal number") from None
    if not value.is_finite() or value <= _ZERO:
        raise ValueError(f"price {text!r} must be a finite decimal > 0")
    return _bounded(value, text, "price")


def is_size_text(text: str) -> bool:
    """True when ``text`` is a valid size (finite, bounded, >= 0)."""
    if _plain(text):
        return True
    try:
        parse_size(text)
    except ValueError:
        return False
    return True


def is_price_text(text: str) -> bool:
    """True when ``text`` is a valid price (finite, bounded, > 0)."""
    if _plain(text):
        return bool(text.strip("0."))
    try:
        parse_price(text)
    except ValueError:
        return False
    return True


def size_is_zero(text: str) -> bool:
    """True when the (valid) size ``text`` is zero: the level is removed."""
    if _plain(text):
        return not text.strip("0.")
    return parse_size(text) == _ZERO


def decimal_text(value: Decimal | str) -> str:
    """``value`` as plain decimal text (no exponent); text is returned as it is.

    An out-of-bounds ``Decimal`` raises ``ValueError`` instead of being written out (that is what
    would take gigabytes). Text is left for the parsers above, which bound it. NaN and infinities
    come back as their names, for those parsers to refuse.
    """
    if isinstance(value, str):
        return value
    if not value.is_finite():
        return str(value)
    problem = bounds_problem(value)
    if problem is not None:
        raise ValueError(f"decimal {_describe(value)} is out of bounds: {problem}")
    return format(value, "f")


def _describe(value: Decimal) -> str:
    # str() of an unbounded Decimal is short unless its coefficient is long: cut it.
    text = str(value)
    return text if len(text) <= 60 else text[:30] + "…" + text[-20:]


PLACES_SLACK: Final = 8
"""Decimal places a market's prices (sizes) may have beyond its tick (step) size.

Depth and trades have only been seen at the tick's scale or shorter, but whether the exchange can
send more places (after a tick change, or as kline values do, ``"3680.520000000"`` on a 0.01-tick
market) is uncertain (docs/protocol.md §1.7), so a margin is allowed.
"""
PRICE_INTEGER_DIGITS: Final = 12
"""Integer digits a price may have (below a trillion; raised for a tick near that size)."""
SIZE_INTEGER_DIGITS: Final = 15
"""Integer digits a size may have (below 1e15; raised for a step near that size)."""


def _places_and_integer_digits(increment: Decimal, what: str) -> tuple[int, int]:
    # The fewest decimal places and integer digits that write the increment (0.010 -> 2, 0).
    if not increment.is_finite() or increment <= _ZERO:
        raise ValueError(f"{what} {_describe(increment)} is not a finite decimal > 0")
    problem = bounds_problem(increment)
    if problem is not None:
        raise ValueError(f"{what} {_describe(increment)} is out of bounds: {problem}")
    _, digits, exponent = increment.as_tuple()
    assert isinstance(exponent, int)  # finite
    count = len(digits)
    while count > 1 and digits[count - 1] == 0 and exponent < 0:
        count -= 1
        exponent += 1
    return max(0, -exponent), max(0, count + exponent)


@dataclass(frozen=True, slots=True)
class MarketBounds:
    """One market's bounds for price and size text (see the module docstring).

    Build it with :meth:`for_increments`. ``*_fast`` is the longest text that needs no closer look:
    text of at most that length without an exponent cannot exceed either bound.
    """

    price_places: int
    price_digits: int
    size_places: int
    size_digits: int
    price_fast: int
    size_fast: int

    @classmethod
    def for_increments(cls, tick_size: Decimal, step_size: Decimal) -> MarketBounds:
        """The bounds of a market with this tick and step size (``ValueError`` if unbounded)."""
        tick_places, tick_digits = _places_and_integer_digits(tick_size, "tick size")
        step_places, step_digits = _places_and_integer_digits(step_size, "step size")
        # Never wider than the global bounds (at most 40 places, values below 1e41).
        price_places = min(tick_places + PLACES_SLACK, -MIN_EXPONENT)
        size_places = min(step_places + PLACES_SLACK, -MIN_EXPONENT)
        # A price of at least 100 ticks always fits, however coarse the tick.
        price_digits = min(max(PRICE_INTEGER_DIGITS, tick_digits + 2), MAX_ADJUSTED + 1)
        size_digits = min(max(SIZE_INTEGER_DIGITS, step_digits + 2), MAX_ADJUSTED + 1)
        return cls(
            price_places,
            price_digits,
            size_places,
            size_digits,
            # Without an exponent, text of n characters has at most n - 1 places and n digits.
            min(price_places + 1, price_digits),
            min(size_places + 1, size_digits),
        )

    def price_problem(self, text: str | Decimal) -> str | None:
        """Why ``text`` is no valid price of this market, or None."""
        return _market_problem(text, "price", self.price_places, self.price_digits)

    def size_problem(self, text: str | Decimal) -> str | None:
        """Why ``text`` is no valid size of this market, or None."""
        return _market_problem(text, "size", self.size_places, self.size_digits)

    def levels_problem(self, levels: Iterable[tuple[str | Decimal, str | Decimal]]) -> str | None:
        """Why one of ``levels`` is outside this market's bounds, or None.

        Short text without an exponent (a ``Decimal`` whose ``str()`` is such text) is passed
        without a closer look, since it cannot be outside the bounds, so the caller must still
        check that it is a number, as ``OrderBook`` does; everything else gets the full check of
        :meth:`price_problem` and :meth:`size_problem`.
        """
        price_fast = self.price_fast
        size_fast = self.size_fast
        for price, size in levels:
            try:
                if (
                    len(price) <= price_fast  # type: ignore[arg-type]
                    and len(size) <= size_fast  # type: ignore[arg-type]
                    and "e" not in price  # type: ignore[operator]
                    and "E" not in price  # type: ignore[operator]
                    and "e" not in size  # type: ignore[operator]
                    and "E" not in size  # type: ignore[operator]
                ):
                    continue
            except TypeError:
                # Decimal levels (REST snapshots, thousands at a time): str() writes the digits
                # as sent unless they need an exponent, so the same test applies to it.
                if type(price) is Decimal and type(size) is Decimal:
                    price_text = str(price)
                    size_text = str(size)
                    if (
                        len(price_text) <= price_fast
                        and len(size_text) <= size_fast
                        and "E" not in price_text
                        and "E" not in size_text
                    ):
                        continue
            problem = self.price_problem(price) or self.size_problem(size)
            if problem is not None:
                return problem
        return None


def _market_problem(value: str | Decimal, what: str, places: int, digits: int) -> str | None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            return f"{what} {value} is not a finite decimal"
        # O(1) first: a huge exponent is refused before str() looks at the coefficient.
        adjusted = value.adjusted()
        if not -places <= adjusted < digits:
            return f"{what} {_describe(value)} is outside the market's bounds: {adjusted=}"
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return f"{what} {value!r:.60} is not decimal text"
    try:
        number = parse_price(text) if what == "price" else parse_size(text)
    except ValueError as exc:
        return str(exc)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if -exponent > places:
        return (
            f"{what} {text!r:.60} has {-exponent} decimal places, more than the market's {places}"
        )
    if number.adjusted() >= digits:
        return f"{what} {text!r:.60} has more than the market's {digits} integer digits"
    return None
