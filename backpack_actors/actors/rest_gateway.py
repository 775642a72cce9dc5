"""Every REST call goes through here: one shared rate budget (in trio time) and one retry policy.

- HTTP 429: both buckets are penalised until ``Retry-After`` (or our backoff) has passed; retried.
- 5xx / network / undecodable body: retried with capped exponential backoff.
- HTTP 451 / non-JSON 403 (:class:`RegionRestrictedError`) and other 4xx: raised at once, never
  retried — a retry loop cannot fix a location or a bad request.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from backpack_actors.core.budget import TokenBucket
from backpack_actors.errors import ExchangeUnavailableError, ProtocolError, RateLimitedError

__all__ = ["RestGateway", "RestStats"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@attrs.define
class RestStats:
    """Counters of the REST layer (read through the feed's ``statistics()``)."""

    calls: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    protocol_errors: int = 0
    retries: int = 0
    waited_for_budget: float = 0.0


class RestGateway:
    """Rate-budgeted, retrying access to a :class:`~backpack_actors.transport.rest.RestClient`."""

    def __init__(
        self,
        *,
        general: TokenBucket,
        history: TokenBucket,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.general = general
        self.history = history
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self.stats = RestStats()

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return float(delay * self.rng.uniform(0.8, 1.2))

    async def call(
        self,
        what: str,
        fn: Callable[[], Awaitable[_T]],
        *,
        history: bool = False,
        max_attempts: int | None = None,
    ) -> _T:
        """Run ``fn`` within the budget, retrying what is retryable."""
        attempt = 0
        while True:
            buckets = (self.general, self.history) if history else (self.general,)
            for bucket in buckets:
                wait = bucket.reserve(trio.current_time())
                if wait > 0:
                    self.stats.waited_for_budget += wait
                    await trio.sleep(wait)
            self.stats.calls += 1
            attempt += 1
            try:
                return await fn()
            except RateLimitedError as exc:
                self.stats.rate_limited += 1
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                now = trio.current_time()
                self.general.penalize(now, delay)
                self.history.penalize(now, delay)
                log.warning("%s: rate limited (HTTP 429); waiting %.2f s", what, delay)
                failure: Exception = exc
            except ExchangeUnavailableError as exc:
                self.stats.server_errors += 1
                failure = exc
                await self._sleep_backoff(what, attempt, exc)
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                failure = exc
                await self._sleep_backoff(what, attempt, exc)
            if max_attempts is not None and attempt >= max_attempts:
                raise failure
            self.stats.retries += 1

    async def _sleep_backoff(self, what: str, attempt: int, exc: Exception) -> None:
        delay = self._backoff(attempt)
        log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
        await trio.sleep(delay)
