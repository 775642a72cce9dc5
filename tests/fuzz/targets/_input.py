"""A tiny reader that turns fuzz bytes into choices (atheris' FuzzedDataProvider, without atheris).

The targets must run in the regular test suite, where atheris is not installed, so they read
their structured inputs through this instead. Every read is defined on any input: past the end
it returns zeros and empty values, so a short input is a short program, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Input"]

T = TypeVar("T")


class Input:
    """Consumes bytes from the front of ``data``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not consumed yet."""
        return len(self._data) - self._pos

    def byte(self) -> int:
        """One byte (0 past the end)."""
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def uint(self, size: int) -> int:
        """An unsigned big-endian integer of ``size`` bytes."""
        chunk = self.bytes(size)
        return int.from_bytes(chunk.ljust(size, b"\0"), "big")

    def below(self, bound: int) -> int:
        """An integer in ``0..bound-1`` (``bound`` at most 2**32)."""
        if bound <= 1:
            return 0
        size = 1 if bound <= 256 else 2 if bound <= 65536 else 4
        return self.uint(size) % bound

    def signed(self, magnitude: int) -> int:
        """An integer in ``-magnitude..magnitude``."""
        return self.below(2 * magnitude + 1) - magnitude

    def flag(self) -> bool:
        """A boolean."""
        return bool(self.byte() & 1)

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``."""
        return options[self.below(len(options))]

    def bytes(self, count: int) -> bytes:
        """Up to ``count`` bytes."""
        chunk = self._data[self._pos : self._pos + count]
        self._pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        """Everything not consumed yet."""
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk
