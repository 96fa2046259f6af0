"""gRPC helpers shared by the service clients.

- ``RequestStream``: many requests, each with an id, over one long-lived bidirectional stream
  (what ``StorageClient.apply``, the storage nodes' replicators and ``SearchClient.search`` ride).
"""

from libs.rpc._stream import RequestStream

__all__ = ["RequestStream"]
