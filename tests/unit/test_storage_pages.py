"""Compaction's column-at-a-time page of an LWW partition is the page the row builder makes."""

from __future__ import annotations

from services.storage.pages import RecordPageBuilder, lww_partition_page
from services.storage.records import LwwRecord
from topgun_rpc import common_pb2


def test_lww_partition_page_equals_the_row_by_row_page_tombstones_and_ttls_included() -> None:
    rows = {
        "a": LwwRecord(10, 1, "n1", b"\x81\xa1x\x01", 0, 3),
        "b": LwwRecord(11, 0, "n2", b"", 0, 4),  # tombstone
        "c": LwwRecord(12, 7, "n1", b"\xa2hi", 5000, 9),
    }
    page = RecordPageBuilder("m")
    for key, rec in rows.items():
        page.add(42, key, "", rec)
    want = page.build()
    got = common_pb2.RecordBatch.FromString(lww_partition_page("m", 42, rows))
    assert got == want
    assert list(got.kinds) == [common_pb2.PUT, common_pb2.REMOVE, common_pb2.PUT]


def test_lww_partition_page_of_an_empty_partition_is_an_empty_page() -> None:
    page = common_pb2.RecordBatch.FromString(lww_partition_page("m", 0, {}))
    assert page == RecordPageBuilder("m").build()
