"""OTP-style supervisors on trio: child specs, restart strategies, restart windows, backoff.

A :class:`Supervisor` starts its children in order, each with ``await nursery.start(...)`` (a child
calls ``task_status.started()`` only when it is really ready), then watches them:

* an error that :func:`backpack_actors.errors.is_retryable` accepts restarts the child after its
  backoff delay — alone (``one_for_one``), together with every child started after it
  (``rest_for_one``), or together with all its siblings (``one_for_all``);
* any other error is a bug or a configuration problem: the supervisor stops every child and
  re-raises the original exception unchanged, at once;
* more than ``intensity`` restarts within ``period`` seconds stops every child and raises
  :class:`~backpack_actors.errors.EscalationError` naming the supervisor, the child and the last
  error (chained as ``__cause__``).

Restart types follow OTP: ``permanent`` children are restarted after any exit, ``transient`` ones
only after an error, ``temporary`` ones never. A supervisor's :meth:`Supervisor.run` is itself a
valid child start function, so supervisors nest. Every task lives in the supervisor's nursery.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

import attrs
import trio

from backpack_actors.core.restart import Backoff, RestartWindow
from backpack_actors.errors import EscalationError, RateLimitedError, is_retryable

__all__ = [
    "ChildSpec",
    "ChildState",
    "ChildStatistics",
    "RestartType",
    "StartFn",
    "Strategy",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorEventKind",
    "SupervisorState",
    "SupervisorStatistics",
    "leaf_exceptions",
]

logger = logging.getLogger(__name__)

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "rest_for_one", "one_for_all"]
_RESTART_TYPES = ("permanent", "transient", "temporary")
_STRATEGIES = ("one_for_one", "rest_for_one", "one_for_all")


class StartFn(Protocol):
    """``async def start(task_status=trio.TASK_STATUS_IGNORED)``: runs the child until it ends."""

    def __call__(self, *, task_status: trio.TaskStatus[None]) -> Awaitable[None]: ...


class ChildState(enum.StrEnum):
    """Where a child is in its life."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    STOPPED = "stopped"


class SupervisorState(enum.StrEnum):
    """Where a supervisor is in its life."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    ESCALATED = "escalated"


class SupervisorEventKind(enum.StrEnum):
    """What a :class:`SupervisorEvent` announces."""

    STARTED = "started"
    RESTARTING = "restarting"
    EXITED = "exited"
    ESCALATED = "escalated"


@attrs.frozen
class ChildSpec:
    """How to run one child: ``start`` is awaited through ``nursery.start``."""

    id: str
    start: StartFn
    restart: RestartType = attrs.field(default="permanent")
    # How long a stopped child may take to unwind its finally-blocks before the supervisor moves
    # on without it (the task stays owned by the nursery; trio cannot kill a task).
    shutdown_timeout: float = 5.0

    @restart.validator
    def _check_restart(self, _attribute: object, value: str) -> None:
        if value not in _RESTART_TYPES:
            raise ValueError(f"restart must be one of {_RESTART_TYPES}, got {value!r}")


@attrs.frozen
class SupervisorEvent:
    """A change in a child's life, handed to the ``on_event`` hook."""

    supervisor: str
    child: str
    kind: SupervisorEventKind
    restarts: int
    delay: float | None = None
    error: BaseException | None = None


@attrs.frozen
class ChildStatistics:
    """One child's current state and restart count."""

    id: str
    state: ChildState
    restarts: int
    last_error: str | None


@attrs.frozen
class SupervisorStatistics:
    """A snapshot of a supervisor's state, returned by :meth:`Supervisor.statistics`."""

    name: str
    state: SupervisorState
    strategy: Strategy
    restarts_in_window: int
    children: tuple[ChildStatistics, ...]

    @property
    def restarts(self) -> dict[str, int]:
        """Restarts per child id."""
        return {child.id: child.restarts for child in self.children}

    def child(self, child_id: str) -> ChildStatistics:
        """The statistics of one child."""
        for child in self.children:
            if child.id == child_id:
                return child
        raise KeyError(child_id)


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (``[exc]`` when it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in exc.exceptions:
            leaves.extend(leaf_exceptions(inner))
        return leaves
    return [exc]


def _unwrap(exc: BaseException) -> BaseException:
    """A group with a single leaf stands for that leaf; several distinct errors stay a group."""
    leaves = leaf_exceptions(exc)
    return leaves[0] if len(leaves) == 1 else exc


def _retryable(exc: BaseException) -> bool:
    return all(is_retryable(leaf) for leaf in leaf_exceptions(exc))


@attrs.define(eq=False)
class _Child:
    index: int
    spec: ChildSpec
    backoff: Backoff | None
    state: ChildState = ChildState.IDLE
    generation: int = 0
    restarts: int = 0
    due: float = math.inf
    scope: trio.CancelScope | None = None
    done: trio.Event | None = None
    last_error: BaseException | None = None


@attrs.frozen
class _Exit:
    child: _Child
    generation: int
    error: BaseException | None


class _Escalate(Exception):
    """Internal: unwinds the supervisor's loop carrying the exception to raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class _StartStatus(trio.TaskStatus[None]):
    """Forwards ``started()`` to the nursery and remembers that it happened."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.reported = False

    def started(self, value: None = None) -> None:
        self._inner.started()
        self.reported = True


class Supervisor:
    """Runs child specs under one restart strategy, restart window and backoff policy.

    ``backoff`` is a template: each child gets its own :meth:`Backoff.fresh` copy, marked connected
    when the child reports ready. ``None`` restarts without delay. ``clock`` feeds the restart
    window and backoff (trio time by default, so virtual-time tests work); ``on_event`` is called
    synchronously for every :class:`SupervisorEvent`.

    :meth:`run` reports ready once every child is running (or has stopped for good), and returns
    normally once every child has stopped for good (transient/temporary children that finished).
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        intensity: int = 10,
        period: float = 60.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = trio.current_time,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        ids = [spec.id for spec in children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"supervisor {name!r}: duplicate child ids {duplicates}")
        self.name = name
        self.strategy: Strategy = strategy
        self.intensity = intensity
        self.period = period
        self._specs = tuple(children)
        self._backoff = backoff
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._on_event = on_event
        self._window = RestartWindow(intensity, period)
        self._children = self._fresh_children()
        self._state = SupervisorState.IDLE
        self._nursery: trio.Nursery | None = None
        self._exits: trio.MemorySendChannel[_Exit] | None = None
        self._task_status: trio.TaskStatus[None] | None = None

    def _fresh_children(self) -> list[_Child]:
        return [
            _Child(i, spec, self._backoff.fresh() if self._backoff is not None else None)
            for i, spec in enumerate(self._specs)
        ]

    @property
    def state(self) -> SupervisorState:
        """The supervisor's current state."""
        return self._state

    def statistics(self) -> SupervisorStatistics:
        """Restarts per child and current states."""
        try:
            in_window = self._window.count(self._clock())
        except RuntimeError:
            # trio's clock only exists inside trio.run; outside it every recorded restart counts.
            in_window = len(self._window)
        return SupervisorStatistics(
            name=self.name,
            state=self._state,
            strategy=self.strategy,
            restarts_in_window=in_window,
            children=tuple(
                ChildStatistics(
                    id=child.spec.id,
                    state=child.state,
                    restarts=child.restarts,
                    last_error=repr(child.last_error) if child.last_error is not None else None,
                )
                for child in self._children
            ),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children and supervise them until cancelled, escalated or all stopped."""
        if self._state in (SupervisorState.STARTING, SupervisorState.RUNNING):
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        # A restarted supervisor starts afresh, as a new OTP supervisor process would.
        self._children = self._fresh_children()
        self._window.reset()
        self._state = SupervisorState.STARTING
        self._task_status = task_status
        # Unbounded is safe: each child run sends at most one exit message.
        send, receive = trio.open_memory_channel[_Exit](math.inf)
        escalation: BaseException | None = None
        try:
            # The channels outlive the nursery: a child that fails while the nursery waits for
            # it must not meet a closed channel (its real error would become a
            # ClosedResourceError). Once this loop no longer listens, a child's error is raised
            # from its own task instead, so the nursery surfaces it.
            # (Closed synchronously: an async close would checkpoint, and in a cancelled scope
            # its Cancelled would replace the children's errors.)
            with send, receive:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._exits = send
                    try:
                        for child in self._children:
                            if child.state is ChildState.IDLE:
                                await self._start_child(child)
                        self._maybe_report_started()
                        await self._supervise(receive)
                    except _Escalate as escalate:
                        escalation = escalate.error
                        self._exits = None
                        await self._stop_all()
                        nursery.cancel_scope.cancel()
                    finally:
                        self._exits = None
        except BaseExceptionGroup as group:
            if escalation is not None:
                # Children failed while stopping after an escalation: keep both.
                raise BaseExceptionGroup(
                    f"supervisor {self.name!r} escalated; children failed while stopping",
                    [escalation, group],
                ) from None
            raise
        finally:
            self._nursery = None
            self._exits = None
            self._task_status = None
            self._state = (
                SupervisorState.ESCALATED if escalation is not None else SupervisorState.STOPPED
            )
        if escalation is not None:
            raise escalation

    # --- the loop --------------------------------------------------------------------------

    async def _supervise(self, receive: trio.MemoryReceiveChannel[_Exit]) -> None:
        while any(child.state is not ChildState.STOPPED for child in self._children):
            due = min(
                (c.due for c in self._children if c.state is ChildState.RESTARTING),
                default=math.inf,
            )
            message: _Exit | None = None
            with trio.move_on_at(due):
                message = await receive.receive()
            if message is None:
                await self._restart_due()
            else:
                await self._on_exit(message)
            self._maybe_report_started()

    def _maybe_report_started(self) -> None:
        if self._task_status is None:
            return
        if all(c.state in (ChildState.RUNNING, ChildState.STOPPED) for c in self._children):
            self._state = SupervisorState.RUNNING
            task_status, self._task_status = self._task_status, None
            task_status.started()

    async def _restart_due(self) -> None:
        for child in self._children:
            # Re-read each time: starting an earlier child may have failed and pushed this one.
            if child.state is ChildState.RESTARTING and child.due <= trio.current_time():
                await self._start_child(child)

    # --- one child -------------------------------------------------------------------------

    async def _start_child(self, child: _Child) -> None:
        assert self._nursery is not None
        child.generation += 1
        child.state = ChildState.STARTING
        child.due = math.inf
        try:
            await self._nursery.start(self._run_child, child, child.generation)
        except Exception as exc:
            await self._child_exited(child, exc)
            return
        child.state = ChildState.RUNNING
        if child.backoff is not None:
            child.backoff.mark_connected(self._clock())
        self._emit(child, SupervisorEventKind.STARTED)

    async def _run_child(
        self, child: _Child, generation: int, task_status: trio.TaskStatus[None]
    ) -> None:
        status = _StartStatus(task_status)
        done = child.done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                try:
                    await child.spec.start(task_status=status)
                except Exception as exc:
                    if not status.reported or not self._report(_Exit(child, generation, exc)):
                        raise
                    return
            if scope.cancelled_caught:
                return  # stopped by this supervisor on purpose; it already knows
            if not status.reported:
                raise RuntimeError(
                    f"child {child.spec.id!r} of supervisor {self.name!r} returned without "
                    "calling task_status.started()"
                )
            self._report(_Exit(child, generation, None))
        finally:
            done.set()

    def _report(self, message: _Exit) -> bool:
        """Hand a child's exit to the loop; False once the loop stopped listening."""
        if message.error is not None and trio.current_effective_deadline() == -math.inf:
            # The supervisor itself is being cancelled: its loop may never read this. Raise it
            # from the child's task instead, so the nursery surfaces it.
            return False
        if self._exits is None:
            return message.error is None
        self._exits.send_nowait(message)
        return True

    async def _on_exit(self, message: _Exit) -> None:
        child = message.child
        if message.generation != child.generation or child.state is not ChildState.RUNNING:
            # A child this supervisor already stopped: only a bug still deserves attention.
            if message.error is not None and not _retryable(message.error):
                self._escalate(child, _unwrap(message.error))
            return
        await self._child_exited(child, message.error)

    async def _child_exited(self, child: _Child, error: BaseException | None) -> None:
        child.scope = None
        if error is None:
            if child.spec.restart != "permanent":
                self._stopped_for_good(child, None)
                return
        else:
            error = _unwrap(error)
            child.last_error = error
            if not _retryable(error):
                self._escalate(child, error)
            if child.spec.restart == "temporary":
                self._stopped_for_good(child, error)
                return
        await self._schedule_restart(child, error)

    def _stopped_for_good(self, child: _Child, error: BaseException | None) -> None:
        child.state = ChildState.STOPPED
        logger.info(
            "supervisor %s: child %s exited (%r), not restarted", self.name, child.spec.id, error
        )
        self._emit(child, SupervisorEventKind.EXITED, error=error)

    async def _schedule_restart(self, child: _Child, error: BaseException | None) -> None:
        now = self._clock()
        if not self._window.record(now):
            exc = EscalationError(
                f"supervisor {self.name!r} gave up: child {child.spec.id!r} needed more than "
                f"{self.intensity} restarts within {self.period:g} s; last error: {error!r}"
            )
            exc.__cause__ = error
            exc.__suppress_context__ = True
            self._escalate(child, exc)
        delay = child.backoff.next_delay(now, self._rng) if child.backoff is not None else 0.0
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)  # the server said when; earlier is pointless
        siblings = self._siblings_to_restart(child)
        # Stop dependants in reverse start order, as OTP does.
        for sibling in reversed(siblings):
            if sibling.state is ChildState.RUNNING:
                await self._stop(sibling)
        due = trio.current_time() + delay
        child.state = ChildState.RESTARTING
        child.due = due
        child.restarts += 1
        for sibling in siblings:
            if sibling.spec.restart == "temporary":
                self._stopped_for_good(sibling, None)
                continue
            if sibling.state is not ChildState.RESTARTING:
                sibling.restarts += 1
            sibling.state = ChildState.RESTARTING
            sibling.due = due if sibling.due == math.inf else max(sibling.due, due)
        logger.warning(
            "supervisor %s: restarting %s in %.3f s after %r",
            self.name,
            child.spec.id,
            delay,
            error,
        )
        self._emit(child, SupervisorEventKind.RESTARTING, delay=delay, error=error)

    def _siblings_to_restart(self, child: _Child) -> list[_Child]:
        if self.strategy == "one_for_one":
            return []
        if self.strategy == "rest_for_one":
            candidates = self._children[child.index + 1 :]
        else:
            candidates = [c for c in self._children if c is not child]
        # Children that never started yet or already stopped for good are left as they are.
        return [
            c
            for c in candidates
            if c.state in (ChildState.RUNNING, ChildState.STARTING, ChildState.RESTARTING)
        ]

    async def _stop(self, child: _Child) -> None:
        child.state = ChildState.STOPPING
        if child.scope is not None:
            child.scope.cancel()
        if child.done is not None:
            with trio.move_on_after(child.spec.shutdown_timeout) as waited:
                await child.done.wait()
            if waited.cancelled_caught:
                logger.error(
                    "supervisor %s: child %s did not stop within %g s; moving on",
                    self.name,
                    child.spec.id,
                    child.spec.shutdown_timeout,
                )
        child.scope = None

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            if child.state is ChildState.RUNNING:
                await self._stop(child)
            if child.state is not ChildState.STOPPED:
                child.state = ChildState.STOPPED

    def _escalate(self, child: _Child, error: BaseException) -> None:
        logger.error("supervisor %s: escalating %r from child %s", self.name, error, child.spec.id)
        self._emit(child, SupervisorEventKind.ESCALATED, error=error)
        raise _Escalate(error)

    def _emit(
        self,
        child: _Child,
        kind: SupervisorEventKind,
        *,
        delay: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self._on_event is not None:
            self._on_event(
                SupervisorEvent(
                    supervisor=self.name,
                    child=child.spec.id,
                    kind=kind,
                    restarts=child.restarts,
                    delay=delay,
                    error=error,
                )
            )
