"""Target for ``core.dectext``: numeric text, including huge exponents and digit counts.

Invariants: ``is_price_text``/``is_size_text`` agree with the parsers; a parsed value is bounded
and written out in a bounded number of characters; ``decimal_text`` refuses (``ValueError``)
instead of writing an unbounded ``Decimal``; a market's bounds agree with the exact rule.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from backpack_actors.core.dectext import (
    MarketBounds,
    bounds_problem,
    decimal_text,
    is_price_text,
    is_size_text,
    parse_price,
    parse_size,
    size_is_zero,
)
from tests.fuzz.targets._input import Input

__all__ = ["dectext"]

MAX_PLAIN = 90
BOUNDS = MarketBounds.for_increments(Decimal("0.01"), Decimal("0.0001"))
# The same market as tests/unit/test_market_bounds.py: tick 0.01 and step 0.0001, slack 8.
PRICE_PLACES, PRICE_DIGITS = BOUNDS.price_places, BOUNDS.price_digits
SIZE_PLACES, SIZE_DIGITS = BOUNDS.size_places, BOUNDS.size_digits


def _inside(value: Decimal, places: int, digits: int) -> bool:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= places and value.adjusted() < digits


def _check_text(text: str) -> None:
    for parse, is_valid, places, digits, problem in (
        (parse_price, is_price_text, PRICE_PLACES, PRICE_DIGITS, BOUNDS.price_problem),
        (parse_size, is_size_text, SIZE_PLACES, SIZE_DIGITS, BOUNDS.size_problem),
    ):
        try:
            value = parse(text)
        except ValueError as exc:
            message = str(exc)
            assert len(message) <= 400
            assert not is_valid(text), text
            assert problem(text) is not None
            continue
        assert is_valid(text), text
        assert bounds_problem(value) is None
        written = decimal_text(value)
        assert len(written) <= MAX_PLAIN
        assert Decimal(written) == value
        found = problem(text)
        assert (found is None) is _inside(value, places, digits), (text, found)
        if found is not None:
            assert len(found) <= 400
    if is_size_text(text):
        assert size_is_zero(text) is (parse_size(text) == 0)
    fast = BOUNDS.levels_problem([(text, "1")])
    if fast is None and is_price_text(text):
        assert _inside(parse_price(text), PRICE_PLACES, PRICE_DIGITS), text


def _check_decimal(value: Decimal) -> None:
    problem = bounds_problem(value) if value.is_finite() else None
    try:
        written = decimal_text(value)
    except ValueError as exc:
        message = str(exc)
        assert problem is not None
        assert len(message) <= 400
    else:
        assert problem is None or not value.is_finite()
        assert len(written) <= MAX_PLAIN
    found = BOUNDS.price_problem(value)
    if found is None:
        assert value.is_finite()
        assert value > 0
        assert _inside(value, PRICE_PLACES, PRICE_DIGITS)
    else:
        assert len(found) <= 400


def dectext(data: bytes) -> None:
    """Text from the input as it is, or a number built from huge parts."""
    source = Input(data)
    mode = source.byte() % 3
    if mode == 0:
        _check_text(source.rest().decode("utf-8", "replace"))
        return
    # Up to 5000 coefficient digits and an exponent anywhere in the int32 range.
    count = 1 + source.below(5000)
    seed = source.bytes(8) or b"1"
    digits = "".join(str(seed[i % len(seed)] % 10) for i in range(count))
    exponent = source.signed(2**31)
    if mode == 1:
        point = source.below(count + 1)
        text = digits[:point] + ("." if source.flag() else "") + digits[point:]
        _check_text(text + (f"e{exponent}" if source.flag() else ""))
        return
    try:
        value = Decimal((source.byte() & 1, tuple(int(d) for d in digits), exponent))
    except (InvalidOperation, ValueError):
        return
    _check_decimal(value)
