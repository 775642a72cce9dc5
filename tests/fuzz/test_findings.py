"""Regression tests for what the coverage-guided fuzz targets found (docs/fuzzing.md).

Each finding's input is also in the target's seed corpus (``tests/fuzz/corpus/<target>/``), so
``test_targets.py`` replays it through the target's invariants as well.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from backpack_actors.core import wire
from backpack_actors.errors import ProtocolError


@pytest.mark.parametrize(
    "raw",
    [
        b'{"stream":"x.y","data":{"e":"foo","v":1e999999999}}',
        b'{"stream":"x.y","data":{"e":"foo","v":[5E+67]}}',
        b'{"stream":"account.positionUpdate","data":{"v":1.' + b"0" * 200 + b"}}",
    ],
)
def test_an_unknown_events_numbers_are_bounded(raw: bytes) -> None:
    # ws_frame: an unknown event kept its payload with an unbounded Decimal (1E+999999999, 200
    # digits), which anything writing it out as plain digits would have turned into gigabytes.
    with pytest.raises(ProtocolError, match=r"out of bounds|more than 100 characters"):
        wire.decode_ws_frame(raw)


def test_an_unknown_events_bounded_numbers_are_kept_exactly() -> None:
    frame = wire.decode_ws_frame(b'{"stream":"x.y","data":{"e":"foo","v":1.50,"w":[2e3]}}')
    assert isinstance(frame.data, wire.UnknownEvent)
    assert frame.data.payload == {"e": "foo", "v": Decimal("1.50"), "w": [Decimal("2E+3")]}
