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
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

__all__ = [
    "MAX_ADJUSTED",
    "MAX_DIGITS",
    "MAX_PLAIN",
    "MAX_TEXT",
    "MIN_EXPONENT",
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
