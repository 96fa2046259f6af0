"""The async client every service uses to talk to storage nodes over gRPC.

- ``StorageClient(address)``: one node's API (apply, get, scan, leaf sums, bucket records,
  change feed, partition info, topics, counters, health), a deadline on every unary call.
- ``OpBatchBuilder``: collect ops, build one columnar OpBatch (partitions computed in batch).
- ``request_stream(opener, address)``: a ``libs.rpc.RequestStream`` failing with the errors
  below (what ``StorageClient.apply`` and the storage nodes' replicators ride).
- ``StorageRouter(table, clients)``: split a batch by partition owner, one Apply per owner,
  statuses back in the original order; leaf sums and bucket records over all owners.
- Rows: ``StoredRecord``, ``Change``, ``ChangePage``; ``records_from_batch``,
  ``changes_from_batch`` turn RecordBatch/ChangeBatch into them.
"""

from libs.storage_client._builder import OpBatchBuilder
from libs.storage_client._client import (
    CHANNEL_OPTIONS,
    LEAF_COUNT,
    ApplyResult,
    CounterSnapshot,
    LeafSums,
    MapSummary,
    PartitionInfo,
    StorageClient,
    add_leaf_sums,
    leaf_sums_from_bytes,
)
from libs.storage_client._errors import (
    BadRequest,
    FeedDropped,
    NotOwner,
    StorageError,
    StorageUnavailable,
    request_stream,
)
from libs.storage_client._records import (
    OR_ADD,
    OR_REMOVE,
    PUT,
    REMOVE,
    Change,
    ChangePage,
    StoredRecord,
    changes_from_batch,
    records_from_batch,
    records_from_ops,
)
from libs.storage_client._router import RoutedApplyResult, StorageRouter
from topgun_rpc.common_pb2 import OpKind, WriteConcern
from topgun_rpc.storage_pb2 import MapKind, OpStatus

__all__ = [
    "CHANNEL_OPTIONS",
    "LEAF_COUNT",
    "OR_ADD",
    "OR_REMOVE",
    "PUT",
    "REMOVE",
    "ApplyResult",
    "BadRequest",
    "Change",
    "ChangePage",
    "CounterSnapshot",
    "FeedDropped",
    "LeafSums",
    "MapKind",
    "MapSummary",
    "NotOwner",
    "OpBatchBuilder",
    "OpKind",
    "OpStatus",
    "PartitionInfo",
    "RoutedApplyResult",
    "StorageClient",
    "StorageError",
    "StorageRouter",
    "StorageUnavailable",
    "StoredRecord",
    "WriteConcern",
    "add_leaf_sums",
    "changes_from_batch",
    "leaf_sums_from_bytes",
    "records_from_batch",
    "records_from_ops",
    "request_stream",
]
