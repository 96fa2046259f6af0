"""Project and Map: reshape each batch.

``ProjectP`` keeps (and renames) columns; ``MapP`` applies any batch-to-batch function, the
escape hatch for transforms the planner does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from libs.dag.batch import Batch
from libs.dag.processor import BaseProcessor, Inbox


class MapP(BaseProcessor):
    """Emit ``fn(batch)`` for every batch (rows dropped when it returns an empty batch)."""

    def __init__(self, fn: Callable[[Batch], Batch]) -> None:
        super().__init__()
        self.fn = fn

    def process(self, ordinal: int, inbox: Inbox) -> None:
        if self.emitting and not self.emit_from():
            return
        while inbox:
            out = self.fn(inbox.popleft())
            if len(out) and not self.outbox.offer(out):
                self.emit_from(iter([out]))
                return


def project_batch(
    batch: Batch, fields: Sequence[str], rename: Mapping[str, str] | None = None
) -> Batch:
    rename = rename or {}
    return Batch(batch.keys, {rename.get(f, f): batch.column(f) for f in fields})


class ProjectP(MapP):
    """Keep ``fields`` (in that order), optionally renamed; absent fields become missing."""

    def __init__(self, fields: Sequence[str], rename: Mapping[str, str] | None = None) -> None:
        fields = tuple(fields)
        names = dict(rename or {})
        super().__init__(lambda b: project_batch(b, fields, names))
