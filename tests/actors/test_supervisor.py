"""OTP-style supervisors on trio, in virtual time (autojump_clock)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from backpack_actors.core.restart import Backoff
from backpack_actors.errors import (
    ConfigError,
    EscalationError,
    ExchangeUnavailableError,
    RateLimitedError,
    RegionRestrictedError,
    StreamStaleError,
)
from backpack_actors.supervisor import (
    ChildSpec,
    ChildState,
    RestartType,
    StartFn,
    Supervisor,
    SupervisorEvent,
    SupervisorEventKind,
    SupervisorState,
    leaf_exceptions,
)


class Log(list[tuple[str, str, float]]):
    """(child, what, time) entries; times are relative to the log's creation (the virtual clock
    starts at an arbitrary offset)."""

    def __init__(self) -> None:
        super().__init__()
        self.origin = trio.current_time()
        self._changed = trio.Event()

    def now(self) -> float:
        return trio.current_time() - self.origin

    def record(self, name: str, what: str) -> None:
        self.append((name, what, self.now()))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool], cap: float = 600.0) -> None:
        """Wait (in virtual time) until ``condition`` holds after some entry; capped."""
        with trio.fail_after(cap):
            while not condition():
                await self._changed.wait()


@attrs.frozen
class Step:
    """One run of a scripted child: run ``run_for`` seconds after ready, then end."""

    run_for: float = math.inf
    error: BaseException | None = None
    fail_before_ready: bool = False
    skip_started: bool = False


def forever() -> Step:
    return Step()


def fail_after(seconds: float, error: BaseException) -> Step:
    return Step(run_for=seconds, error=error)


def return_after(seconds: float) -> Step:
    return Step(run_for=seconds)


def fail_start(error: BaseException) -> Step:
    return Step(error=error, fail_before_ready=True)


@attrs.define
class Actor:
    """A child whose runs follow ``plan`` (the last step repeats), recording its life in ``log``."""

    name: str
    log: Log
    plan: list[Step]
    ready_delay: float = 0.0
    starts: int = 0

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        step = self.plan[min(self.starts, len(self.plan) - 1)]
        self.starts += 1
        self.log.record(self.name, "start")
        try:
            if step.fail_before_ready:
                assert step.error is not None
                raise step.error
            await trio.sleep(self.ready_delay)
            if step.skip_started:
                return
            task_status.started()
            self.log.record(self.name, "ready")
            await trio.sleep(step.run_for)
            if step.error is not None:
                raise step.error
        finally:
            self.log.record(self.name, "stop")

    def spec(self, restart: RestartType = "permanent") -> ChildSpec:
        return ChildSpec(self.name, self.start, restart=restart)


def entries(log: Log, name: str, what: str) -> list[float]:
    return [t for n, w, t in log if n == name and w == what]


def no_jitter(base: float = 0.5, factor: float = 2.0, cap: float = 30.0) -> Backoff:
    return Backoff(base=base, factor=factor, cap=cap, jitter=0.0, stable_after=30.0)


# Virtual seconds: a supervisor that wrongly restarts forever turns into a failure, not a hang.
CAP = 600.0


async def run_capped(run: StartFn) -> None:
    with trio.fail_after(CAP):
        await run(task_status=trio.TASK_STATUS_IGNORED)


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


# --- strategies ------------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_failed_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    a = Actor("a", log, [forever()])
    b = Actor("b", log, [fail_after(1.0, ExchangeUnavailableError("boom")), forever()])
    c = Actor("c", log, [forever()])
    sup = Supervisor("streams", [a.spec(), b.spec(), c.spec()], backoff=no_jitter())
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await log.wait_until(lambda: b.starts == 2 and len(entries(log, "b", "ready")) == 2)
            assert (a.starts, b.starts, c.starts) == (1, 2, 1)
            assert entries(log, "a", "stop") == []
            assert entries(log, "c", "stop") == []
            assert entries(log, "b", "start") == [0.0, pytest.approx(1.5)]
            assert sup.statistics().restarts == {"a": 0, "b": 1, "c": 0}
            nursery.cancel_scope.cancel()


async def test_rest_for_one_restarts_later_children_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    a = Actor("a", log, [forever()])
    b = Actor("b", log, [fail_after(1.0, StreamStaleError("silent")), forever()])
    c = Actor("c", log, [forever()])
    sup = Supervisor(
        "root", [a.spec(), b.spec(), c.spec()], strategy="rest_for_one", backoff=no_jitter()
    )
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await log.wait_until(lambda: c.starts == 2 and len(entries(log, "c", "ready")) == 2)
            after_failure = [(n, w) for n, w, t in log if t >= 1.0]
            assert after_failure == [
                ("b", "stop"),
                ("c", "stop"),
                ("b", "start"),
                ("b", "ready"),
                ("c", "start"),
                ("c", "ready"),
            ]
            assert a.starts == 1
            assert entries(log, "c", "start") == [0.0, pytest.approx(1.5)]
            assert sup.statistics().restarts == {"a": 0, "b": 1, "c": 1}
            nursery.cancel_scope.cancel()


async def test_one_for_all_restarts_every_child_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    a = Actor("a", log, [forever()])
    b = Actor("b", log, [fail_after(2.0, ExchangeUnavailableError("x")), forever()])
    c = Actor("c", log, [forever()])
    sup = Supervisor("all", [a.spec(), b.spec(), c.spec()], strategy="one_for_all")
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await log.wait_until(lambda: c.starts == 2 and len(entries(log, "c", "ready")) == 2)
            assert [n for n, w, t in log if t >= 2.0 and w == "start"] == ["a", "b", "c"]
            # Siblings are stopped in reverse start order before the restart.
            assert [n for n, w, t in log if t >= 2.0 and w == "stop"] == ["b", "c", "a"]
            nursery.cancel_scope.cancel()


# --- backoff in virtual time -----------------------------------------------------------------


async def test_backoff_delays_are_applied_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    flaky = Actor("ws", log, [fail_after(0.0, ExchangeUnavailableError("refused"))])
    sup = Supervisor(
        "streams", [flaky.spec()], intensity=100, period=60.0, backoff=no_jitter(1.0, 2.0, 4.0)
    )
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await log.wait_until(lambda: flaky.starts == 6)
            starts = entries(log, "ws", "start")
            gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
            assert gaps == [1.0, 2.0, 4.0, 4.0, 4.0]
            nursery.cancel_scope.cancel()


async def test_jittered_delays_match_the_backoff_maths(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    flaky = Actor("ws", log, [fail_after(0.0, ExchangeUnavailableError("refused"))])
    template = Backoff(base=1.0, factor=2.0, cap=8.0, jitter=0.3, stable_after=30.0)
    sup = Supervisor(
        "streams", [flaky.spec()], intensity=100, backoff=template, rng=random.Random(42)
    )
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await log.wait_until(lambda: flaky.starts == 6)
            starts = entries(log, "ws", "start")
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            nursery.cancel_scope.cancel()
    model, rng = template.fresh(), random.Random(42)
    expected = [model.next_delay(t, rng) for t in starts[:5]]
    assert gaps == pytest.approx(expected, abs=1e-6)
    assert len(set(gaps)) == 5  # jitter really varies the delays


async def test_backoff_resets_only_after_the_child_was_stable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    err = ExchangeUnavailableError("x")
    plan = [fail_after(0.0, err)] * 3 + [fail_after(10.0, err), fail_after(0.0, err), forever()]
    child = Actor("ws", log, plan)
    backoff = Backoff(base=1.0, factor=2.0, cap=60.0, jitter=0.0, stable_after=5.0)
    sup = Supervisor("streams", [child.spec()], intensity=100, backoff=backoff)
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await log.wait_until(lambda: child.starts == 6)
            starts = entries(log, "ws", "start")
            stops = entries(log, "ws", "stop")
            delays = [round(s - f, 6) for f, s in zip(stops, starts[1:], strict=False)]
            # 1, 2, 4 while flapping; healthy 10 s >= 5 s resets to 1; then grows again to 2.
            assert delays == [1.0, 2.0, 4.0, 1.0, 2.0]
            nursery.cancel_scope.cancel()


async def test_rate_limited_error_waits_at_least_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    child = Actor("rest", log, [fail_after(0.0, RateLimitedError("/api/v1/depth", 7.0)), forever()])
    sup = Supervisor("snap", [child.spec()], backoff=no_jitter())
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await log.wait_until(lambda: child.starts == 2)
            assert entries(log, "rest", "start") == [0.0, pytest.approx(7.0)]
            nursery.cancel_scope.cancel()


# --- escalation ------------------------------------------------------------------------------


async def test_exceeding_the_restart_window_escalates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    err = ExchangeUnavailableError("server down")
    flaky = Actor("ws", log, [fail_after(1.0, err)])
    calm = Actor("calm", log, [forever()])
    events: list[SupervisorEvent] = []
    sup = Supervisor(
        "streams", [calm.spec(), flaky.spec()], intensity=2, period=60.0, on_event=events.append
    )
    with pytest.raises(EscalationError) as info:
        await run_capped(sup.run)
    message = str(info.value)
    assert "'streams'" in message
    assert "'ws'" in message
    assert "server down" in message
    assert info.value.__cause__ is err
    assert flaky.starts == 3  # initial run + 2 allowed restarts; the third failure escalates
    assert entries(log, "calm", "stop") == [pytest.approx(3.0)]
    assert events[-1].kind is SupervisorEventKind.ESCALATED
    assert events[-1].child == "ws"
    assert sup.state is SupervisorState.ESCALATED


@pytest.mark.parametrize(
    "bug",
    [
        KeyError("missing"),
        ConfigError("symbols", "a list"),
        RegionRestrictedError("https://api.backpack.exchange/api/v1/depth", 451),
    ],
)
async def test_non_retryable_error_propagates_at_once_unchanged(
    bug: BaseException, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    buggy = Actor("buggy", log, [fail_after(2.0, bug)])
    other = Actor("other", log, [forever()])
    sup = Supervisor("root", [buggy.spec(), other.spec()], backoff=no_jitter())
    with pytest.raises(type(bug)) as info:
        await run_capped(sup.run)
    assert info.value is bug
    assert buggy.starts == 1
    assert entries(log, "other", "stop") == [2.0]  # stopped at the moment of the bug


async def test_bug_before_ready_propagates_through_nursery_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    bug = ValueError("bad wiring")
    buggy = Actor("buggy", log, [fail_start(bug)])
    first = Actor("first", log, [forever()])
    sup = Supervisor("root", [first.spec(), buggy.spec()])
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ValueError, match="bad wiring") as info:
                await nursery.start(sup.run)
    assert info.value is bug
    assert buggy.starts == 1
    assert entries(log, "first", "stop") == [0.0]


async def test_child_returning_without_started_is_a_bug(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    lazy = Actor("lazy", log, [Step(skip_started=True)])
    sup = Supervisor("root", [lazy.spec()])
    with pytest.raises(RuntimeError, match=r"without calling task_status\.started"):
        await run_capped(sup.run)


# --- restart types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "step", "restarted"),
    [
        ("permanent", return_after(1.0), True),
        ("permanent", fail_after(1.0, StreamStaleError("quiet")), True),
        ("transient", return_after(1.0), False),
        ("transient", fail_after(1.0, StreamStaleError("quiet")), True),
        ("temporary", return_after(1.0), False),
        ("temporary", fail_after(1.0, StreamStaleError("quiet")), False),
    ],
)
async def test_restart_types(
    restart: RestartType, step: Step, restarted: bool, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    subject = Actor("subject", log, [step, forever()])
    anchor = Actor("anchor", log, [forever()])
    sup = Supervisor("root", [anchor.spec(), subject.spec(restart)], backoff=no_jitter())
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await trio.sleep(10.0)
            stats = sup.statistics().child("subject")
            if restarted:
                assert subject.starts == 2
                assert entries(log, "subject", "start") == [0.0, pytest.approx(1.5)]
                assert (stats.state, stats.restarts) == (ChildState.RUNNING, 1)
            else:
                assert subject.starts == 1
                assert (stats.state, stats.restarts) == (ChildState.STOPPED, 0)
            assert anchor.starts == 1
            nursery.cancel_scope.cancel()


async def test_supervisor_returns_when_every_child_stopped_for_good(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    job = Actor("job", log, [return_after(3.0)])
    sup = Supervisor("jobs", [job.spec("transient")])
    await run_capped(sup.run)
    assert log.now() == pytest.approx(3.0)
    assert sup.state is SupervisorState.STOPPED


# --- start-up, nesting, cancellation ---------------------------------------------------------


async def test_ready_is_reported_only_once_every_child_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    slow = Actor("slow", log, [forever()], ready_delay=4.0)
    shaky = Actor("shaky", log, [fail_start(ExchangeUnavailableError("refused")), forever()])
    sup = Supervisor("root", [slow.spec(), shaky.spec()], backoff=no_jitter(base=2.0))
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            # slow is ready at 4; shaky fails its first start at 4, then 2 s of backoff.
            assert log.now() == pytest.approx(6.0)
            assert entries(log, "shaky", "ready") == [pytest.approx(6.0)]
            assert sup.state is SupervisorState.RUNNING
            nursery.cancel_scope.cancel()


async def test_nested_supervisor_restarts_inside_and_escalates_outside(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    err = ExchangeUnavailableError("down")
    s1 = Actor("s1", log, [fail_after(1.0, err), fail_after(1.0, err), forever()])
    s2 = Actor("s2", log, [forever()])
    inner = Supervisor("streams", [s1.spec(), s2.spec()], intensity=5, backoff=no_jitter())
    reconciler = Actor("reconciler", log, [forever()])
    outer = Supervisor(
        "root",
        [reconciler.spec(), ChildSpec("streams", inner.run)],
        strategy="rest_for_one",
    )
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            await log.wait_until(lambda: s1.starts == 3 and len(entries(log, "s1", "ready")) == 3)
            assert (reconciler.starts, s2.starts) == (1, 1)
            assert outer.statistics().restarts == {"reconciler": 0, "streams": 0}
            assert inner.statistics().restarts == {"s1": 2, "s2": 0}
            nursery.cancel_scope.cancel()

    # Now the inner window is too small: its EscalationError is not retryable, so root escalates.
    log.clear()
    s1 = Actor("s1", log, [fail_after(1.0, err)])
    inner = Supervisor("streams", [s1.spec()], intensity=1)
    outer = Supervisor("root", [reconciler.spec(), ChildSpec("streams", inner.run)])
    with pytest.raises(EscalationError, match="'streams'") as info:
        await run_capped(outer.run)
    assert info.value.__cause__ is err
    assert entries(log, "reconciler", "stop") == [pytest.approx(log.now())]


async def test_cancelling_the_supervisor_stops_every_child_and_leaves_no_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    actors = [Actor(name, log, [forever()]) for name in ("a", "b", "c", "d")]
    inner = Supervisor("inner", [actors[2].spec(), actors[3].spec()])
    outer = Supervisor("outer", [actors[0].spec(), actors[1].spec(), ChildSpec("inner", inner.run)])
    tasks_before = count_tasks()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            assert count_tasks() > tasks_before + 4
            await trio.sleep(5.0)
            nursery.cancel_scope.cancel()
    assert count_tasks() == tasks_before
    for actor in actors:
        assert entries(log, actor.name, "start") == [0.0]
        assert entries(log, actor.name, "stop") == [5.0]
    assert outer.state is SupervisorState.STOPPED
    assert inner.state is SupervisorState.STOPPED


# --- exception groups ------------------------------------------------------------------------


def grouped_child(*errors: BaseException) -> StartFn:
    """A child whose inner tasks all fail in the same scheduling round, one second after ready."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def fail(error: BaseException) -> None:
            raise error

        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.sleep(1.0)
            for error in errors:
                nursery.start_soon(fail, error)

    return start


async def test_single_retryable_error_inside_a_group_is_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[SupervisorEvent] = []
    log = Log()
    inner_start = grouped_child(ExchangeUnavailableError("net"))

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.record("grp", "start")
        if len(log) == 1:
            await inner_start(task_status=task_status)
        else:
            task_status.started()
            await trio.sleep_forever()

    sup = Supervisor("g", [ChildSpec("grp", start)], on_event=events.append)
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await log.wait_until(lambda: len(log) == 2)
            restarting = [e for e in events if e.kind is SupervisorEventKind.RESTARTING]
            assert len(restarting) == 1
            assert isinstance(restarting[0].error, ExchangeUnavailableError)  # unwrapped leaf
            nursery.cancel_scope.cancel()


async def test_single_bug_inside_a_group_is_raised_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bug = KeyError("k")
    sup = Supervisor("g", [ChildSpec("grp", grouped_child(bug))])
    with pytest.raises(KeyError) as info:
        await run_capped(sup.run)
    assert info.value is bug


async def test_several_distinct_errors_reraise_the_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bug, net = KeyError("k"), ExchangeUnavailableError("net")
    sup = Supervisor("g", [ChildSpec("grp", grouped_child(bug, net))])
    with pytest.raises(BaseExceptionGroup) as info:
        await run_capped(sup.run)
    assert sorted(map(repr, leaf_exceptions(info.value))) == sorted([repr(bug), repr(net)])


# --- events and statistics -------------------------------------------------------------------


async def test_events_and_statistics(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    events: list[SupervisorEvent] = []
    err = ExchangeUnavailableError("x")
    a = Actor("a", log, [forever()])
    b = Actor("b", log, [fail_after(1.0, err), forever()])

    def on_event(event: SupervisorEvent) -> None:
        events.append(event)
        log.record(event.child, f"event {event.kind}")

    sup = Supervisor("streams", [a.spec(), b.spec()], backoff=no_jitter(), on_event=on_event)
    assert sup.statistics().state is SupervisorState.IDLE
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await log.wait_until(lambda: len(entries(log, "b", "event started")) == 2)
            summary = [(e.supervisor, e.child, e.kind, e.restarts, e.delay) for e in events]
            assert summary == [
                ("streams", "a", SupervisorEventKind.STARTED, 0, None),
                ("streams", "b", SupervisorEventKind.STARTED, 0, None),
                ("streams", "b", SupervisorEventKind.RESTARTING, 1, 0.5),
                ("streams", "b", SupervisorEventKind.STARTED, 1, None),
            ]
            assert events[2].error is err
            stats = sup.statistics()
            assert stats.state is SupervisorState.RUNNING
            assert stats.restarts_in_window == 1
            assert stats.child("b").last_error == repr(err)
            assert [c.state for c in stats.children] == [ChildState.RUNNING, ChildState.RUNNING]
            nursery.cancel_scope.cancel()


def test_bad_specs_are_rejected() -> None:
    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    with pytest.raises(ValueError, match="duplicate"):
        Supervisor("s", [ChildSpec("x", start), ChildSpec("x", start)])
    with pytest.raises(ValueError, match="strategy"):
        Supervisor("s", [], strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restart"):
        ChildSpec("x", start, restart="sometimes")  # type: ignore[arg-type]


async def test_running_twice_concurrently_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    sup = Supervisor("s", [Actor("a", log, [forever()]).spec()])
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with pytest.raises(RuntimeError, match="already running"):
                await run_capped(sup.run)
            nursery.cancel_scope.cancel()


def test_statistics_work_outside_trio() -> None:
    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    stats = Supervisor("s", [ChildSpec("x", start)]).statistics()
    assert (stats.state, stats.restarts, stats.restarts_in_window) == (
        SupervisorState.IDLE,
        {"x": 0},
        0,
    )


async def test_a_child_failing_while_the_supervisor_stops_surfaces_its_own_error() -> None:
    """Issue 11 point 10: the old supervisor closed its channels before its nursery waited for
    the children, so a child failing during shutdown raised ClosedResourceError instead."""

    async def fails_on_the_way_out(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise RuntimeError("boom while stopping")

    supervisor = Supervisor("root", [ChildSpec("a", fails_on_the_way_out)])

    async def run_and_cancel() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            nursery.cancel_scope.cancel()

    with trio.fail_after(5), pytest.raises(BaseExceptionGroup) as caught:
        await run_and_cancel()
    leaves = [e for e in leaf_exceptions(caught.value) if not isinstance(e, trio.Cancelled)]
    assert [type(e) for e in leaves] == [RuntimeError], leaves
    assert "boom while stopping" in str(leaves[0])


async def test_an_escalation_is_not_lost_when_a_sibling_fails_while_stopping() -> None:
    async def bug(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep(1)
        raise KeyError("the bug")

    async def fails_on_the_way_out(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise RuntimeError("boom while stopping")

    supervisor = Supervisor("root", [ChildSpec("bug", bug), ChildSpec("b", fails_on_the_way_out)])
    with trio.fail_after(5), pytest.raises(BaseExceptionGroup) as caught:
        await supervisor.run()
    leaves = leaf_exceptions(caught.value)
    assert any(isinstance(e, KeyError) for e in leaves), leaves
    assert any(isinstance(e, RuntimeError) and "boom" in str(e) for e in leaves), leaves
