"""Run a :class:`DagSpec` inside one process: whole, or split as it would be across nodes.

:func:`run_split` runs the fragment once per simulated storage node (each with its own
records) and pipes every node's exchange ports into the coordinator's input ports, exactly the
wiring the query_dag service does over gRPC. Tests use it to check plans without processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from libs.dag.batch import Batch
from libs.dag.executor import Job
from libs.dag.registry import SourceProvider, build_coordinator, build_fragment, build_local
from libs.dag.spec import RESULT_PORT, DagSpec


async def run_local(
    spec: DagSpec,
    sources: SourceProvider,
    *,
    principal: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> list[Batch]:
    return await Job(build_local(spec, sources=sources, principal=principal)).collect(
        RESULT_PORT, timeout
    )


async def run_split(
    spec: DagSpec,
    node_sources: Sequence[SourceProvider],
    *,
    principal: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> list[Batch]:
    fragment, coordinator, ports = spec.split()
    final = Job(build_coordinator(coordinator, ports, principal=principal), name="coordinator")
    fragments = [
        Job(build_fragment(fragment, ports, sources=s, principal=principal), name=f"node{i}")
        for i, s in enumerate(node_sources)
    ]
    remaining = {p.name: len(fragments) for p in ports}

    async def pipe(job: Job, port: str) -> None:
        async for item in job.output(port):
            await final.input(port).put(item)
        remaining[port] -= 1
        if remaining[port] == 0:
            final.input(port).close()

    async with asyncio.TaskGroup() as tg:
        for job in fragments:
            tg.create_task(job.run(timeout))
            for p in ports:
                tg.create_task(pipe(job, p.name))
        if not fragments:
            for p in ports:
                final.input(p.name).close()
        result = tg.create_task(final.collect(RESULT_PORT, timeout))
    return result.result()
