"""TopGun's CRDT core, byte-compatible with the TypeScript client: hashes, HLC, LWW and OR maps,
PN counter, Merkle trees. Pure, synchronous, no I/O."""

from libs.crdt.collation import compare_node_ids
from libs.crdt.hashing import (
    PARTITION_COUNT,
    combine,
    fnv1a,
    fnv1a_many,
    hash_hex,
    mix,
    mix_many,
    partition_of,
    partitions_of,
)
from libs.crdt.hlc import (
    DEFAULT_MAX_DRIFT_MS,
    HLC,
    ClockDriftError,
    HlcState,
    InvalidNodeId,
    Timestamp,
    compare_timestamps,
    system_clock_ms,
    timestamp_after,
)
from libs.crdt.jsvalues import (
    canonical_json,
    js_key_order,
    js_number_to_string,
    json_string,
    normalize_number,
    normalize_value,
    or_value_string,
    sort_keys_utf16,
)
from libs.crdt.leaf_sums import DEPTH, LEAF_COUNT, LeafSums, leaf_path, leaf_slot, leaf_slots
from libs.crdt.lww import LwwMap, LwwRecord, values_equal
from libs.crdt.merkle import MerkleTree, OrMerkleTree, lww_item_hash, lww_item_hashes
from libs.crdt.or_entry import hash_or_entry, hash_or_record, or_entry_string, or_record_string
from libs.crdt.ormap import OrMap, OrRecord
from libs.crdt.pncounter import PNCounter, state_from_wire

__all__ = [
    "DEFAULT_MAX_DRIFT_MS",
    "DEPTH",
    "HLC",
    "LEAF_COUNT",
    "PARTITION_COUNT",
    "ClockDriftError",
    "HlcState",
    "InvalidNodeId",
    "LeafSums",
    "LwwMap",
    "LwwRecord",
    "MerkleTree",
    "OrMap",
    "OrMerkleTree",
    "OrRecord",
    "PNCounter",
    "Timestamp",
    "canonical_json",
    "combine",
    "compare_node_ids",
    "compare_timestamps",
    "fnv1a",
    "fnv1a_many",
    "hash_hex",
    "hash_or_entry",
    "hash_or_record",
    "js_key_order",
    "js_number_to_string",
    "json_string",
    "leaf_path",
    "leaf_slot",
    "leaf_slots",
    "lww_item_hash",
    "lww_item_hashes",
    "mix",
    "mix_many",
    "normalize_number",
    "normalize_value",
    "or_entry_string",
    "or_record_string",
    "or_value_string",
    "partition_of",
    "partitions_of",
    "sort_keys_utf16",
    "state_from_wire",
    "system_clock_ms",
    "timestamp_after",
    "values_equal",
]
