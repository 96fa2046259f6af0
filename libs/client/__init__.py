"""The TopGun Python client SDK: an offline-first replica of TopGun maps over WebSocket.

Importable as ``topgun``. Asyncio first::

    async with TopGunClient("ws://127.0.0.1:8080/ws") as client:
        todos = client.lww_map("todos")
        todos.set("t1", {"title": "milk", "done": False})   # local at once, synced later
        await todos.flush()                                   # wait for the server's ack
        async for result in client.query("todos", where={"done": False}):
            print(result.rows)

and blocking, for scripts and notebooks: ``client = topgun.connect(url)``.
"""

from libs.client._blocking import BlockingClient, connect
from libs.client._client import ClientOptions, TopGunClient, WriteConcern
from libs.client._connection import ConnectionOptions, NotConnected, Status
from libs.client._counters import Counter
from libs.client._feed import SubscriptionClosed, SubscriptionOverflow
from libs.client._maps import LwwMapHandle, OrMapHandle, WriteOp
from libs.client._oplog import StoreInUse
from libs.client._outbox import WriteRejected
from libs.client._protocol import PartitionMap, SearchHit
from libs.client._queries import LiveQuery, QueryChange, QueryResult
from libs.client._search import LiveSearch, SearchChange
from libs.client._sync import SyncStats
from libs.client._topics import Message, PublishQueueFull, Subscription

__all__ = [
    "BlockingClient",
    "ClientOptions",
    "ConnectionOptions",
    "Counter",
    "LiveQuery",
    "LiveSearch",
    "LwwMapHandle",
    "Message",
    "NotConnected",
    "OrMapHandle",
    "PartitionMap",
    "PublishQueueFull",
    "QueryChange",
    "QueryResult",
    "SearchChange",
    "SearchHit",
    "Status",
    "StoreInUse",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionOverflow",
    "SyncStats",
    "TopGunClient",
    "WriteConcern",
    "WriteOp",
    "WriteRejected",
    "connect",
]
