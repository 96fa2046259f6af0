"""The cooperative executor: one asyncio task per processor instance, bounded queues between them.

Each edge is a set of :class:`Conveyor` queues (one per target instance) holding at most
``queue_size`` items. A processor's outbox routes what it offers into those queues and refuses
more while anything is still waiting to go out; the task then parks until the queue drains. So
a slow sink parks its producers, which park theirs, back to the sources, and the memory a job
holds is bounded by the queue sizes whatever the speed of its ends.

Processor calls are synchronous and each handles a bounded amount of input (the items of one
inbox), and the task yields to the event loop after every call, so a job never starves the
other work of the process.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.dag.batch import Batch
from libs.dag.model import Dag, Routing
from libs.dag.processor import Inbox, Processor, ProcessorContext
from libs.dag.routing import split_by_target


class JobState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobFailed(RuntimeError):
    """A job stopped because a processor raised (or it ran out of time); the message says where."""


class JobTimedOut(JobFailed):
    pass


class JobCancelled(RuntimeError):
    """The job was cancelled before this port could finish."""


class ProcessorFailed(RuntimeError):
    def __init__(
        self, vertex: str, instance: int, parallelism: int, phase: str, cause: BaseException
    ):
        self.vertex = vertex
        self.phase = phase
        where = f"vertex {vertex!r}" + (
            f" (instance {instance} of {parallelism})" if parallelism > 1 else ""
        )
        super().__init__(f"{where} failed in {phase}: {type(cause).__name__}: {cause}")


def item_rows(item: Any) -> int:
    return len(item) if isinstance(item, Batch) else 1


class Conveyor:
    """A bounded queue from some producer instances into one consumer instance."""

    __slots__ = ("capacity", "consumer_wake", "done", "items", "producer_wakes", "producers")

    def __init__(self, capacity: int, producers: int) -> None:
        self.capacity = capacity
        self.producers = producers
        self.done = 0
        self.items: collections.deque[Any] = collections.deque()
        self.consumer_wake: asyncio.Event | None = None
        self.producer_wakes: list[asyncio.Event] = []

    def offer(self, item: Any) -> bool:
        if len(self.items) >= self.capacity:
            return False
        self.items.append(item)
        if self.consumer_wake is not None:
            self.consumer_wake.set()
        return True

    def take(self) -> Any:
        was_full = len(self.items) >= self.capacity
        item = self.items.popleft()
        if was_full:
            for w in self.producer_wakes:
                w.set()
        return item

    def producer_done(self) -> None:
        self.done += 1
        if self.consumer_wake is not None:
            self.consumer_wake.set()

    @property
    def exhausted(self) -> bool:
        return self.done >= self.producers and not self.items


@dataclass(slots=True)
class _Route:
    routing: Routing
    targets: list[Conveyor]
    key_fields: tuple[str, ...]
    instance: int
    next_rr: int = 0

    def deliveries(self, item: Any) -> list[tuple[Conveyor, Any]]:
        r = self.routing
        n = len(self.targets)
        if r is Routing.LOCAL:
            return [(self.targets[self.instance % n], item)]
        if r is Routing.ALL_TO_ONE or n == 1:
            return [(self.targets[0], item)]
        if r is Routing.BROADCAST:
            return [(t, item) for t in self.targets]
        if r is Routing.ROUND_ROBIN:
            t = self.targets[self.next_rr % n]
            self.next_rr += 1
            return [(t, item)]
        if isinstance(item, Batch):
            parts = split_by_target(item, self.key_fields, n)
            return [(self.targets[i], p) for i, p in enumerate(parts) if p is not None]
        return [(self.targets[hash(item) % n], item)]


@dataclass(slots=True)
class Counters:
    rows_in: int = 0
    rows_out: int = 0
    batches_in: int = 0
    batches_out: int = 0
    busy_ns: int = 0
    done: bool = False


class _Outbox:
    """Routes offered items into the outbound conveyors; refuses while anything is pending."""

    def __init__(self, routes: list[_Route], counters: Counters) -> None:
        self._routes = routes
        self._pending: list[collections.deque[tuple[Conveyor, Any]]] = [
            collections.deque() for _ in routes
        ]
        self._counters = counters

    @property
    def bucket_count(self) -> int:
        return len(self._routes)

    def _flush(self, o: int) -> bool:
        pending = self._pending[o]
        while pending:
            conveyor, item = pending[0]
            if not conveyor.offer(item):
                return False
            pending.popleft()
        return True

    def flush(self) -> bool:
        ok = True
        for o in range(len(self._routes)):
            ok = self._flush(o) and ok
        return ok

    def has_room(self, ordinal: int | None = None) -> bool:
        ords = range(len(self._routes)) if ordinal is None else (ordinal,)
        return all(self._flush(o) for o in ords)

    def offer(self, item: Any, ordinal: int | None = None) -> bool:
        ords = range(len(self._routes)) if ordinal is None else (ordinal,)
        if not all(self._flush(o) for o in ords):
            return False
        for o in ords:
            self._pending[o].extend(self._routes[o].deliveries(item))
            self._flush(o)
        self._counters.rows_out += item_rows(item)
        self._counters.batches_out += 1
        return True

    @property
    def pending(self) -> bool:
        return any(self._pending)


class _Tasklet:
    def __init__(
        self,
        processor: Processor,
        context: ProcessorContext,
        inbound: dict[int, Conveyor],
        priorities: dict[int, int],
        routes: list[_Route],
        outbound: list[Conveyor],
    ) -> None:
        self.processor = processor
        self.context = context
        self.inbound = inbound
        self.priorities = priorities
        self.counters = Counters()
        self.outbox = _Outbox(routes, self.counters)
        self.outbound = outbound
        self.wake = asyncio.Event()
        for c in inbound.values():
            c.consumer_wake = self.wake
        for c in outbound:
            c.producer_wakes.append(self.wake)

    def _fail(self, phase: str, exc: BaseException) -> ProcessorFailed:
        ctx = self.context
        return ProcessorFailed(ctx.vertex, ctx.instance, ctx.parallelism, phase, exc)

    async def run(self) -> None:
        p = self.processor
        counters = self.counters
        try:
            p.init(self.outbox, self.context)
        except Exception as exc:
            raise self._fail("init()", exc) from exc
        inbox = Inbox()
        inbox_ordinal = -1
        completed: set[int] = set()
        rr = 0
        clock = time.perf_counter_ns
        while True:
            self.wake.clear()
            if self.outbox.pending and not self.outbox.flush():
                await self.wake.wait()
                continue
            if inbox:
                t0 = clock()
                try:
                    p.process(inbox_ordinal, inbox)
                except Exception as exc:
                    raise self._fail(f"process() on ordinal {inbox_ordinal}", exc) from exc
                counters.busy_ns += clock() - t0
                await asyncio.sleep(0)
                continue
            just_done = [o for o, c in self.inbound.items() if o not in completed and c.exhausted]
            if just_done:
                for o in just_done:
                    try:
                        if p.complete_edge(o):
                            completed.add(o)
                    except Exception as exc:
                        raise self._fail(f"complete_edge({o})", exc) from exc
                await asyncio.sleep(0)
                continue
            open_ordinals = [o for o in self.inbound if o not in completed]
            if not open_ordinals:
                t0 = clock()
                try:
                    done = p.complete()
                except Exception as exc:
                    raise self._fail("complete()", exc) from exc
                counters.busy_ns += clock() - t0
                if done:
                    break
                await asyncio.sleep(0)
                continue
            top = min(self.priorities[o] for o in open_ordinals)
            candidates = [o for o in open_ordinals if self.priorities[o] == top]
            ready = [o for o in candidates if self.inbound[o].items]
            if not ready:
                await self.wake.wait()
                continue
            rr += 1
            o = ready[rr % len(ready)]
            conveyor = self.inbound[o]
            while conveyor.items:
                item = conveyor.take()
                inbox.append(item)
                counters.rows_in += item_rows(item)
                counters.batches_in += 1
            inbox_ordinal = o
        while not self.outbox.flush():
            self.wake.clear()
            if not self.outbox.flush():
                await self.wake.wait()
        for c in self.outbound:
            c.producer_done()
        counters.done = True


@dataclass(frozen=True, slots=True)
class VertexStatus:
    name: str
    kind: str
    parallelism: int
    rows_in: int
    rows_out: int
    batches_in: int
    batches_out: int
    busy_ms: float
    instances_done: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    name: str
    state: JobState
    error: str
    elapsed_ms: float
    vertices: tuple[VertexStatus, ...] = field(default_factory=tuple)


class InputChannel:
    """The caller's end of an input port: ``await put(item)`` waits while the port is full."""

    def __init__(self, job: Job, conveyor: Conveyor) -> None:
        self._job = job
        self._conveyor = conveyor
        self._wake = asyncio.Event()
        conveyor.producer_wakes.append(self._wake)
        job._port_wakes.append(self._wake)
        self._closed = False

    async def put(self, item: Any) -> None:
        if self._closed:
            raise RuntimeError("put() on a closed input port")
        while True:
            self._job._raise_if_over()
            self._wake.clear()
            if self._conveyor.offer(item):
                return
            await self._wake.wait()

    async def put_all(self, items: Iterable[Any]) -> None:
        for item in items:
            await self.put(item)

    def close(self) -> None:
        """No more items: the consumer sees the port exhausted once it drained it."""
        if not self._closed:
            self._closed = True
            self._conveyor.producer_done()


class OutputChannel:
    """The caller's end of an output port, an async iterator over what the DAG emits."""

    def __init__(self, job: Job, conveyor: Conveyor) -> None:
        self._job = job
        self._conveyor = conveyor
        self._wake = asyncio.Event()
        conveyor.consumer_wake = self._wake
        job._port_wakes.append(self._wake)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            self._wake.clear()
            if self._conveyor.items:
                return self._conveyor.take()
            if self._conveyor.exhausted:
                raise StopAsyncIteration
            self._job._raise_if_over()
            await self._wake.wait()


class Job:
    """One run of a DAG. ``run()`` executes it; ports are reached through ``input()`` and
    ``output()`` while it runs; ``status()`` is readable at any time."""

    def __init__(self, dag: Dag, *, name: str = "job") -> None:
        dag.validate()
        self.name = name
        self.dag = dag
        self.state = JobState.PENDING
        self.error = ""
        self._started = 0.0
        self._finished = 0.0
        self._port_wakes: list[asyncio.Event] = []
        self._tasklets: dict[str, list[_Tasklet]] = {}
        self._inputs: dict[str, Conveyor] = {}
        self._outputs: dict[str, Conveyor] = {}
        self._input_channels: dict[str, InputChannel] = {}
        self._output_channels: dict[str, OutputChannel] = {}
        self._build()

    def _build(self) -> None:
        dag = self.dag
        # inbound conveyors: (vertex, instance, ordinal) -> Conveyor
        inbound: dict[tuple[str, int, int], Conveyor] = {}
        priorities: dict[tuple[str, int], int] = {}
        routes: dict[tuple[str, int, int], _Route] = {}
        outbound: dict[tuple[str, int], list[Conveyor]] = collections.defaultdict(list)
        for e in dag.edges:
            src_p = dag.vertices[e.source].parallelism
            dst_p = dag.vertices[e.target].parallelism
            targets = []
            for j in range(dst_p):
                if e.routing is Routing.LOCAL:
                    producers = sum(1 for i in range(src_p) if i % dst_p == j)
                elif e.routing is Routing.ALL_TO_ONE:
                    producers = src_p if j == 0 else 0
                else:
                    producers = src_p
                c = Conveyor(e.queue_size, producers)
                inbound[(e.target, j, e.target_ordinal)] = c
                targets.append(c)
            priorities[(e.target, e.target_ordinal)] = e.priority
            for i in range(src_p):
                routes[(e.source, i, e.source_ordinal)] = _Route(
                    e.routing, targets, e.key_fields, i
                )
                outbound[(e.source, i)].extend(targets)
        for p in dag.inputs:
            dst_p = dag.vertices[p.target].parallelism
            if dst_p != 1:
                raise ValueError(f"input port {p.name!r} must feed a vertex of parallelism 1")
            c = Conveyor(p.queue_size, 1)
            inbound[(p.target, 0, p.target_ordinal)] = c
            priorities[(p.target, p.target_ordinal)] = p.priority
            self._inputs[p.name] = c
        for q in dag.outputs:
            src_p = dag.vertices[q.source].parallelism
            c = Conveyor(q.queue_size, src_p)
            for i in range(src_p):
                routes[(q.source, i, q.source_ordinal)] = _Route(Routing.ALL_TO_ONE, [c], (), i)
                outbound[(q.source, i)].append(c)
            self._outputs[q.name] = c
        for name in dag.topological_order():
            v = dag.vertices[name]
            in_ords = dag.inbound_ordinals(name)
            out_ords = dag.outbound_ordinals(name)
            tasklets = []
            for i in range(v.parallelism):
                ctx = ProcessorContext(name, i, v.parallelism, self.name)
                tasklets.append(
                    _Tasklet(
                        v.factory(ctx),
                        ctx,
                        {o: inbound[(name, i, o)] for o in in_ords},
                        {o: priorities[(name, o)] for o in in_ords},
                        [routes[(name, i, o)] for o in out_ords],
                        outbound[(name, i)],
                    )
                )
            self._tasklets[name] = tasklets
        for name, c in self._inputs.items():
            self._input_channels[name] = InputChannel(self, c)
        for name, c in self._outputs.items():
            self._output_channels[name] = OutputChannel(self, c)

    def input(self, name: str) -> InputChannel:
        return self._input_channels[name]

    def output(self, name: str) -> OutputChannel:
        return self._output_channels[name]

    def _raise_if_over(self) -> None:
        if self.state is JobState.FAILED:
            raise JobFailed(self.error)
        if self.state is JobState.CANCELLED:
            raise JobCancelled(f"job {self.name!r} was cancelled")

    def _wake_ports(self) -> None:
        for w in self._port_wakes:
            w.set()

    async def run(self, timeout: float | None = None) -> None:
        """Run every processor to completion. Raises :class:`JobFailed` when a processor raises
        (the message names the vertex and the call) or the timeout passes; cancelling the
        calling task cancels every processor."""
        if self.state is not JobState.PENDING:
            raise RuntimeError(f"job {self.name!r} already ran")
        self.state = JobState.RUNNING
        self._started = time.monotonic()
        try:
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as tg:
                for name, tasklets in self._tasklets.items():
                    for i, t in enumerate(tasklets):
                        tg.create_task(t.run(), name=f"{self.name}/{name}#{i}")
        except TimeoutError as exc:
            self.state = JobState.FAILED
            self.error = f"job {self.name!r} timed out after {timeout:g}s"
            raise JobTimedOut(self.error) from exc
        except BaseExceptionGroup as eg:
            first = _first_error(eg)
            self.state = JobState.FAILED
            self.error = (
                str(first)
                if isinstance(first, ProcessorFailed)
                else (f"job {self.name!r} failed: {type(first).__name__}: {first}")
            )
            raise JobFailed(self.error) from first
        except asyncio.CancelledError:
            self.state = JobState.CANCELLED
            raise
        else:
            self.state = JobState.COMPLETED
        finally:
            self._finished = time.monotonic()
            self._wake_ports()

    async def collect(self, output: str = "out", timeout: float | None = None) -> list[Any]:
        """Run the job and gather everything its output port emits."""
        items: list[Any] = []
        runner = asyncio.create_task(self.run(timeout), name=f"{self.name}/run")
        try:
            async for item in self.output(output):
                items.append(item)
        except BaseException:
            runner.cancel()
            await asyncio.wait([runner])
            if not runner.cancelled():
                runner.exception()  # retrieved: the port already raised the job's error
            raise
        await runner
        return items

    def status(self) -> JobStatus:
        end = self._finished or (time.monotonic() if self._started else 0.0)
        vertices = []
        for name, tasklets in self._tasklets.items():
            v = self.dag.vertices[name]
            cs = [t.counters for t in tasklets]
            vertices.append(
                VertexStatus(
                    name,
                    v.kind,
                    v.parallelism,
                    sum(c.rows_in for c in cs),
                    sum(c.rows_out for c in cs),
                    sum(c.batches_in for c in cs),
                    sum(c.batches_out for c in cs),
                    sum(c.busy_ns for c in cs) / 1e6,
                    sum(1 for c in cs if c.done),
                )
            )
        return JobStatus(
            self.name,
            self.state,
            self.error,
            (end - self._started) * 1000.0 if self._started else 0.0,
            tuple(vertices),
        )


def _first_error(eg: BaseExceptionGroup[Any]) -> BaseException:
    errors: Sequence[BaseException] = eg.exceptions
    for e in errors:
        if isinstance(e, BaseExceptionGroup):
            return _first_error(e)
        if isinstance(e, ProcessorFailed):
            return e
    return errors[0]
