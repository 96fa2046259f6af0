"""Scans: a map's records over some partitions, filtered and projected on the node, in pages.

Values stay msgpack bytes until a predicate or a projection needs them; a scan without either
never decodes. The predicate language is ``libs.query`` (PROTOCOL.md 6.2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

from libs.query import QueryError, compile_filter, project
from services.storage.pages import RecordPageBuilder
from services.storage.partition_store import PartitionStore, decode_value
from services.storage.records import OrTombstone
from topgun_rpc import common_pb2


class BadScan(ValueError):
    """The scan request cannot be run (undecodable or malformed predicate)."""


def compile_scan_filter(predicate: bytes, is_where: bool) -> Any:
    """The compiled filter of a ScanRequest, or None when it has no predicate."""
    if not predicate:
        return None
    try:
        tree = msgpack.unpackb(predicate, raw=False, strict_map_key=False)
    except Exception as e:
        raise BadScan(f"predicate is not valid msgpack: {e}") from None
    if not isinstance(tree, dict):
        raise BadScan("predicate must be a msgpack map")
    try:
        return compile_filter(None, tree) if is_where else compile_filter(tree, None)
    except QueryError as e:
        raise BadScan(str(e)) from None


def scan_pages(
    store: PartitionStore,
    map_name: str,
    partitions: Sequence[int],
    *,
    predicate: bytes = b"",
    is_where: bool = False,
    fields: Sequence[str] = (),
    limit: int = 0,
    include_tombstones: bool = False,
    page_size: int = 1000,
    now_ms: int | None = None,
) -> Iterator[common_pb2.RecordBatch]:
    """Pages of matching rows. Tombstones (with ``include_tombstones``) skip the predicate and
    the projection: they have no value to test."""
    flt = compile_scan_filter(predicate, is_where)
    proj = list(fields) if fields else None
    page = RecordPageBuilder(map_name)
    sent = 0
    for p, key, tag, rec in store.iter_records(
        map_name, partitions, include_tombstones=include_tombstones, now_ms=now_ms
    ):
        value: bytes | None = None
        if isinstance(rec, OrTombstone) or not rec.value:
            pass
        elif flt is not None or proj is not None:
            try:
                decoded = decode_value(rec.value)
            except Exception:
                continue  # an undecodable value matches nothing
            if flt is not None and not flt(key, decoded):
                continue
            if proj is not None:
                value = msgpack.packb(project(decoded, proj), use_bin_type=True)
        page.add(p, key, tag, rec, value)
        sent += 1
        if len(page) >= page_size:
            yield page.build()
            page = RecordPageBuilder(map_name)
        if limit and sent >= limit:
            break
    if len(page):
        yield page.build()
