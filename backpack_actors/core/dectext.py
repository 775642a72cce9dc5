"""Decimal numbers kept as the exchange's text until somebody reads them.

Backpack sends prices and sizes as JSON strings (REFERENCE §2). The hot path keeps those strings:
building a ``Decimal`` costs ~170 ns and hashing a fresh one more, which was most of the per-frame
cost. Text is still checked before it is trusted, with a fast path for the plain
``digits[.digits]`` form the exchange sends and an exact ``Decimal`` fallback for anything else
(exponents, signs, NaN), so nothing malformed is ever applied and nothing valid is refused.
Text ``Decimal()`` would take but other parsers would not (surrounding spaces, ``_`` separators,
non-ASCII digits) is refused: what passes is published exactly as sent.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

__all__ = [
    "RawLevel",
    "decimal_text",
    "is_price_text",
    "is_size_text",
    "parse_price",
    "parse_size",
    "size_is_zero",
]

RawLevel = tuple[str, str]
"""One ``(price, size)`` level as the exchange's decimal text."""

_ZERO: Final = Decimal(0)


def _plain(text: str) -> bool:
    # ASCII digits with at most one dot (and at least one digit): what Backpack sends.
    return text.isascii() and text.replace(".", "", 1).isdigit()


def _decimal(text: str, what: str) -> Decimal:
    # Decimal() also takes surrounding spaces, "_" separators and non-ASCII digits; text that is
    # published as sent must parse anywhere, so those are refused here.
    if not text.isascii() or "_" in text or text != text.strip():
        raise ValueError(f"{what} {text!r} is not a decimal number")
    return Decimal(text)


def parse_size(text: str) -> Decimal:
    """The value of a size: a finite decimal >= 0, else ``ValueError`` naming the text."""
    try:
        value = _decimal(text, "size")
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"size {text!r} is not a decimal number") from None
    if not value.is_finite() or value < _ZERO:
        raise ValueError(f"size {text!r} must be a finite decimal >= 0")
    return value


def parse_price(text: str) -> Decimal:
    """The value of a price: a finite decimal > 0, else ``ValueError`` naming the text."""
    try:
        value = _decimal(text, "price")
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"price {text!r} is not a decimal number") from None
    if not value.is_finite() or value <= _ZERO:
        raise ValueError(f"price {text!r} must be a finite decimal > 0")
    return value


def is_size_text(text: str) -> bool:
    """True when ``text`` is a valid size (finite, >= 0)."""
    if _plain(text):
        return True
    try:
        parse_size(text)
    except ValueError:
        return False
    return True


def is_price_text(text: str) -> bool:
    """True when ``text`` is a valid price (finite, > 0)."""
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
    """``value`` as plain decimal text (no exponent); text is returned as it is."""
    if isinstance(value, str):
        return value
    return format(value, "f")
