"""The jobs this coordinator runs or ran recently, by id, for Cancel and Status."""

from __future__ import annotations

import asyncio
import collections

from services.query_dag.coordinator import DistributedJob


class DuplicateJob(ValueError):
    pass


class JobRegistry:
    def __init__(self, history: int = 256) -> None:
        self.history = history
        self._running: dict[str, tuple[DistributedJob, asyncio.Task[None]]] = {}
        self._finished: collections.OrderedDict[str, DistributedJob] = collections.OrderedDict()

    def add(self, job: DistributedJob, task: asyncio.Task[None]) -> None:
        if job.job_id in self._running:
            raise DuplicateJob(f"job {job.job_id!r} is already running")
        self._finished.pop(job.job_id, None)
        self._running[job.job_id] = (job, task)
        task.add_done_callback(lambda _t: self._done(job))

    def _done(self, job: DistributedJob) -> None:
        self._running.pop(job.job_id, None)
        self._finished[job.job_id] = job
        while len(self._finished) > self.history:
            self._finished.popitem(last=False)

    def get(self, job_id: str) -> DistributedJob | None:
        entry = self._running.get(job_id)
        if entry is not None:
            return entry[0]
        return self._finished.get(job_id)

    def cancel(self, job_id: str) -> bool:
        entry = self._running.get(job_id)
        if entry is None:
            return False
        entry[1].cancel()
        return True

    def cancel_all(self) -> None:
        for _, task in self._running.values():
            task.cancel()

    @property
    def running(self) -> int:
        return len(self._running)
