"""A TopGun storage node (``python -m services.storage``): the primaries and backups of some of
the 271 partitions, CRDT merge of op batches, Merkle leaf sums, a durable store (SQLite,
PostgreSQL or memory) with group commit, replication to backups, and a resumable change feed,
all over gRPC (``proto/topgun_rpc/storage.proto``)."""
