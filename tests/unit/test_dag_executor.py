"""The cooperative executor: routing, bounded edges, back-pressure, cancellation, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from libs.dag import (
    BaseProcessor,
    Batch,
    CollectSinkP,
    Dag,
    DagError,
    ForwardP,
    Inbox,
    Job,
    JobCancelled,
    JobFailed,
    JobState,
    JobTimedOut,
    Routing,
)


def numbers(start: int, n: int) -> Batch:
    return Batch.from_columns(
        [f"k{i}" for i in range(start, start + n)], {"v": list(range(start, start + n))}
    )


class CountingSource(BaseProcessor):
    """Emits ``batches`` batches of ``rows`` rows and counts what the outbox accepted."""

    def __init__(self, batches: int, rows: int = 10) -> None:
        super().__init__()
        self.batches = batches
        self.rows = rows
        self.emitted = 0

    def _gen(self) -> Iterator[Batch]:
        for i in range(self.batches):
            yield numbers(i * self.rows, self.rows)
            self.emitted += 1

    def complete(self) -> bool:
        return self.emit_from(self._gen() if not self.emitting else None)


class Boom(BaseProcessor):
    def process(self, ordinal: int, inbox: Inbox) -> None:
        raise ZeroDivisionError("division by zero in the test processor")


class Tagger(BaseProcessor):
    """Adds a column with the instance number, to see where rows were routed."""

    def process(self, ordinal: int, inbox: Inbox) -> None:
        while inbox:
            b: Batch = inbox[0]
            tagged = b.with_columns(
                {
                    "inst": Batch.from_columns(
                        list(b.keys), {"i": [self.context.instance] * len(b)}
                    ).columns["i"]
                }
            )
            if not self.outbox.offer(tagged):
                return
            inbox.popleft()


def sink_dag(source_batches: int, collected: list, *, parallelism: int = 1, routing=Routing.LOCAL):
    dag = Dag()
    dag.vertex("src", lambda ctx: CountingSource(source_batches))
    dag.vertex("tag", lambda ctx: Tagger(), parallelism)
    dag.vertex("sink", lambda ctx: CollectSinkP(collected))
    dag.edge("src", "tag", routing=routing, key_fields=("v",))
    dag.edge("tag", "sink", routing=Routing.ALL_TO_ONE)
    return dag


async def test_a_chain_delivers_every_row_and_counts_per_vertex() -> None:
    got: list[Batch] = []
    job = Job(sink_dag(20, got))
    await job.run()
    assert sum(len(b) for b in got) == 200
    status = job.status()
    assert status.state is JobState.COMPLETED
    by_name = {v.name: v for v in status.vertices}
    assert by_name["src"].rows_out == 200 and by_name["sink"].rows_in == 200
    assert by_name["tag"].batches_in == 20 and by_name["tag"].instances_done == 1


@pytest.mark.parametrize(
    "routing", [Routing.ROUND_ROBIN, Routing.PARTITIONED, Routing.BROADCAST, Routing.ALL_TO_ONE]
)
async def test_routing_spreads_rows_over_instances_as_named(routing: Routing) -> None:
    got: list[Batch] = []
    await Job(sink_dag(8, got, parallelism=3, routing=routing)).run()
    per_instance = np.bincount(
        np.concatenate([b.columns["inst"].values for b in got]).astype(int), minlength=3
    )
    if routing is Routing.BROADCAST:
        assert per_instance.tolist() == [80, 80, 80]
    elif routing is Routing.ALL_TO_ONE:
        assert per_instance.tolist() == [80, 0, 0]
    elif routing is Routing.ROUND_ROBIN:
        assert per_instance.tolist() == [30, 30, 20]
    else:
        assert per_instance.sum() == 80 and (per_instance > 0).all()


async def test_partitioned_routing_sends_equal_keys_to_the_same_instance() -> None:
    got: list[Batch] = []
    dag = Dag()

    class Repeats(BaseProcessor):
        def complete(self) -> bool:
            gen = (
                Batch.from_columns([f"r{j}{i}" for i in range(4)], {"v": [1, 2.0, "x", 1.0]})
                for j in range(5)
            )
            return self.emit_from(gen if not self.emitting else None)

    dag.vertex("src", lambda ctx: Repeats())
    dag.vertex("tag", lambda ctx: Tagger(), 4)
    dag.vertex("sink", lambda ctx: CollectSinkP(got))
    dag.edge("src", "tag", routing=Routing.PARTITIONED, key_fields=("v",))
    dag.edge("tag", "sink", routing=Routing.ALL_TO_ONE)
    await Job(dag).run()
    where: dict[object, set[int]] = {}
    for b in got:
        for _, row in b.rows():
            where.setdefault(row["v"], set()).add(row["inst"])
    assert all(len(s) == 1 for s in where.values())
    assert where[1] == where[2.0 - 1.0]


async def test_a_slow_consumer_bounds_what_a_fast_source_produces() -> None:
    dag = Dag()
    sources: list[CountingSource] = []

    def make_source(ctx):
        s = CountingSource(1000)
        sources.append(s)
        return s

    dag.vertex("src", make_source)
    dag.vertex("mid", lambda ctx: ForwardP())
    dag.edge("src", "mid", queue_size=2)
    dag.output("out", "mid", queue_size=2)
    job = Job(dag)
    runner = asyncio.create_task(job.run())
    out = job.output("out")
    consumed = 0
    max_ahead = 0
    async for _ in out:
        consumed += 1
        # let every other task run as far as it can before measuring
        for _ in range(20):
            await asyncio.sleep(0)
        max_ahead = max(max_ahead, sources[0].emitted - consumed)
        if consumed == 50:
            break
    # queues of 2 + one inbox of 2 + one pending item per outbox: never the 1000 it could make
    assert max_ahead <= 8
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert job.status().state is JobState.CANCELLED


async def test_cancelling_a_job_stops_every_processor_and_fails_its_ports() -> None:
    dag = Dag()
    dag.vertex("src", lambda ctx: CountingSource(10_000))
    dag.vertex("fwd", lambda ctx: ForwardP(), 2)
    dag.edge("src", "fwd", routing=Routing.ROUND_ROBIN)
    dag.output("out", "fwd")
    job = Job(dag)
    runner = asyncio.create_task(job.run())
    await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert job.status().state is JobState.CANCELLED
    with pytest.raises(JobCancelled):
        async for _ in job.output("out"):
            pass


async def test_an_error_in_a_processor_fails_the_job_with_a_message_naming_it() -> None:
    dag = Dag()
    dag.vertex("src", lambda ctx: CountingSource(3))
    dag.vertex("divide", lambda ctx: Boom(), 2)
    dag.edge("src", "divide", routing=Routing.ROUND_ROBIN)
    job = Job(dag)
    with pytest.raises(JobFailed) as info:
        await job.run()
    msg = str(info.value)
    assert "vertex 'divide'" in msg and "process()" in msg
    assert "ZeroDivisionError: division by zero in the test processor" in msg
    assert job.status().state is JobState.FAILED and job.status().error == msg


async def test_collect_raises_the_job_error_instead_of_hanging() -> None:
    dag = Dag()
    dag.vertex("src", lambda ctx: CountingSource(3))
    dag.vertex("divide", lambda ctx: Boom())
    dag.chain("src", "divide")
    dag.output("out", "divide")
    with pytest.raises(JobFailed, match="divide"):
        await Job(dag).collect("out")


async def test_a_job_that_outlives_its_timeout_fails_as_timed_out() -> None:
    dag = Dag()
    dag.vertex("src", lambda ctx: CountingSource(10_000))
    dag.vertex("fwd", lambda ctx: ForwardP())
    dag.chain("src", "fwd")
    dag.output("out", "fwd")  # nobody reads: the job can never finish
    job = Job(dag)
    with pytest.raises(JobTimedOut, match="timed out"):
        await job.run(timeout=0.2)
    assert job.status().state is JobState.FAILED


async def test_input_ports_feed_a_dag_and_close_ends_it() -> None:
    dag = Dag()
    dag.vertex("fwd", lambda ctx: ForwardP())
    dag.input("in", "fwd", queue_size=1)
    dag.output("out", "fwd")
    job = Job(dag)

    async def feed() -> None:
        await job.input("in").put_all(numbers(i * 5, 5) for i in range(10))
        job.input("in").close()

    feeder = asyncio.create_task(feed())
    items = await job.collect("out")
    await feeder
    assert sum(len(b) for b in items) == 50


async def test_the_low_priority_edge_is_drained_before_the_other_is_read() -> None:
    seen: list[int] = []

    class Recorder(BaseProcessor):
        def process(self, ordinal: int, inbox: Inbox) -> None:
            while inbox:
                inbox.popleft()
                seen.append(ordinal)

    dag = Dag()
    dag.vertex("a", lambda ctx: CountingSource(5))
    dag.vertex("b", lambda ctx: CountingSource(5))
    dag.vertex("rec", lambda ctx: Recorder())
    dag.edge("b", "rec", target_ordinal=1, priority=1)
    dag.edge("a", "rec", target_ordinal=0, priority=0)
    await Job(dag).run()
    assert seen == [0] * 5 + [1] * 5


def test_invalid_dags_are_refused_with_a_reason() -> None:
    dag = Dag()
    dag.vertex("a", lambda ctx: ForwardP())
    dag.vertex("b", lambda ctx: ForwardP())
    dag.edge("a", "b")
    dag.edge("b", "a")
    with pytest.raises(DagError, match="cycle"):
        Job(dag)
    dag = Dag()
    dag.vertex("a", lambda ctx: ForwardP())
    dag.edge("a", "nowhere")
    with pytest.raises(DagError, match="unknown vertex 'nowhere'"):
        Job(dag)
    dag = Dag()
    dag.vertex("a", lambda ctx: CountingSource(1))
    dag.vertex("b", lambda ctx: ForwardP())
    dag.edge("a", "b", target_ordinal=1)
    with pytest.raises(DagError, match="ordinals"):
        Job(dag)
