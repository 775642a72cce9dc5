"""core.dectext: the text checks must say exactly what ``Decimal`` would, fast path or not."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpack_actors.core.dectext import (
    decimal_text,
    is_price_text,
    is_size_text,
    parse_price,
    parse_size,
    size_is_zero,
)

D = Decimal


def reference(text: str) -> Decimal | None:
    """The exact rule, spelled independently: ASCII text with no spaces or ``_`` that
    ``Decimal`` parses to a finite value (what other parsers read the same way)."""
    if any(ord(char) > 127 or char.isspace() or char == "_" for char in text):
        return None
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    # The bounds (core.dectext's docstring), spelled out: <= 40 digits, >= -40 exponent, < 1e41.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) > 40 or exponent < -40 or exponent + len(digits) - 1 > 40:
        return None
    return value


# (text, valid price, valid size, value) — value None where neither is valid.
TABLE: list[tuple[str, bool, bool, Decimal | None]] = [
    # plain: what the exchange sends
    ("179.65", True, True, D("179.65")),
    ("00.10", True, True, D("0.1")),
    (".5", True, True, D("0.5")),
    ("5.", True, True, D("5")),
    ("0", False, True, D("0")),
    ("0.000", False, True, D("0")),
    # exponents
    ("1e3", True, True, D("1000")),
    ("1E-8", True, True, D("0.00000001")),
    ("0E-8", False, True, D("0")),
    # signs
    ("+1", True, True, D("1")),
    ("-1", False, False, None),
    ("-0", False, True, D("0")),
    ("-0.0", False, True, D("0")),
    ("-1e-9", False, False, None),
    # not finite
    ("NaN", False, False, None),
    ("-NaN", False, False, None),
    ("sNaN", False, False, None),
    ("Infinity", False, False, None),
    ("-Infinity", False, False, None),
    ("inf", False, False, None),
    # non-ASCII digits: '٣' is a decimal digit to Decimal but text published as sent must parse
    # anywhere; '²' passes str.isdigit() but is no decimal digit at all.
    ("٣", False, False, None),
    ("١٠.٥", False, False, None),
    ("٠", False, False, None),
    # what Decimal() forgives and other parsers do not
    (" 7", False, False, None),
    ("7 ", False, False, None),
    ("1_000", False, False, None),
    ("²", False, False, None),
    ("1²", False, False, None),
    ("².5", False, False, None),
    # not numbers
    (".", False, False, None),
    ("", False, False, None),
    ("..1", False, False, None),
    ("1.2.3", False, False, None),
    ("abc", False, False, None),
    ("1,5", False, False, None),
]


@pytest.mark.parametrize(("text", "price_ok", "size_ok", "value"), TABLE)
def test_table(text: str, price_ok: bool, size_ok: bool, value: Decimal | None) -> None:
    assert is_price_text(text) is price_ok
    assert is_size_text(text) is size_ok
    if price_ok:
        assert parse_price(text) == value
    else:
        with pytest.raises(ValueError, match=f"price {text!r}"):
            parse_price(text)
    if size_ok:
        assert parse_size(text) == value
        assert size_is_zero(text) is (value == 0)
    else:
        with pytest.raises(ValueError, match=f"size {text!r}"):
            parse_size(text)


def test_error_messages_name_the_text_and_the_rule() -> None:
    with pytest.raises(ValueError, match=r"^price 'abc' is not a decimal number$"):
        parse_price("abc")
    with pytest.raises(ValueError, match=r"^price '0' must be a finite decimal > 0$"):
        parse_price("0")
    with pytest.raises(ValueError, match=r"^size '-1' must be a finite decimal >= 0$"):
        parse_size("-1")
    with pytest.raises(ValueError, match=r"^size 'NaN' must be a finite decimal >= 0$"):
        parse_size("NaN")


@pytest.mark.parametrize("text", ["NaN", "-1", "²", ".", ""])
def test_size_is_zero_never_answers_for_a_bad_size(text: str) -> None:
    # Only meant for checked text; guessing "not zero" would keep a level that must not exist.
    with pytest.raises(ValueError, match="size"):
        size_is_zero(text)


def test_decimal_text() -> None:
    assert decimal_text("1.50") == "1.50"
    assert decimal_text("1e3") == "1e3", "text is returned as it is"
    assert decimal_text(D("1.50")) == "1.50"
    assert decimal_text(D("1E+2")) == "100"
    assert decimal_text(D("0E-8")) == "0.00000000"
    assert decimal_text(D("1.5E-7")) == "0.00000015"


TRICKY = st.text(alphabet="0123456789.+-eE_ NaIinfty٣٠²", max_size=8)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(TRICKY, st.from_regex(r"\A[0-9]{0,4}\.?[0-9]{0,4}\Z"), st.text(max_size=6)))
def test_checks_agree_with_decimal(text: str) -> None:
    value = reference(text)
    assert is_size_text(text) is (value is not None and value >= 0)
    assert is_price_text(text) is (value is not None and value > 0)
    if value is not None and value >= 0:
        assert parse_size(text) == value
        assert size_is_zero(text) is (value == 0)


def in_bounds(value: Decimal) -> bool:
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return len(digits) <= 40 and exponent >= -40 and exponent + len(digits) - 1 <= 40


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimal_text_is_exact_and_plain(value: Decimal) -> None:
    # Hypothesis draws exponents far outside the bounds too: those must be refused, unformatted.
    if not in_bounds(value):
        with pytest.raises(ValueError, match="out of bounds"):
            decimal_text(value)
        return
    text = decimal_text(value)
    assert "E" not in text.upper()
    assert Decimal(text) == value
    assert is_size_text(text) is (value >= 0)
    assert is_price_text(text) is (value > 0)
