"""The message table: client message type -> handler.

Each feature module (writes, Merkle sync, live queries, topics, ...) registers its handlers here
from its ``install(edge)`` function; the session looks a decoded message's ``type`` up and awaits
the handler. A handler answers through the session (``session.send``) and signals a bad request by
raising ``ProtocolError``, which the session turns into an ``ERROR`` reply.

Handlers of one connection run one after another, in frame order. A handler that would wait on the
network for long (a write's storage round trip, a Merkle leaf fetch) hands the work to a batcher
and returns at once; the batcher answers later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from libs.wire import BadFrame

if TYPE_CHECKING:
    from services.edge.session import Session

Message = dict[str, Any]
Handler = Callable[["Session", Message], Awaitable[None]]
CostFn = Callable[[Message], int]


class Dispatcher:
    """Message type -> handler, plus how much of the connection's rate budget a message costs."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._costs: dict[str, CostFn] = {}

    def add(self, message_type: str, handler: Handler, *, cost: CostFn | None = None) -> None:
        """Register ``handler`` for ``message_type``; registering a type twice is a bug."""
        if message_type in self._handlers:
            raise ValueError(f"a handler for {message_type} is already registered")
        self._handlers[message_type] = handler
        if cost is not None:
            self._costs[message_type] = cost

    def ignore(self, message_types: Iterable[str]) -> None:
        """Accept these messages silently (the client sends them; there is nothing to answer)."""
        for t in message_types:
            self.add(t, _ignored)

    def get(self, message_type: str) -> Handler | None:
        return self._handlers.get(message_type)

    def cost(self, msg: Message) -> int:
        fn = self._costs.get(msg["type"])
        return 1 if fn is None else fn(msg)

    def types(self) -> list[str]:
        return sorted(self._handlers)


async def _ignored(session: Session, msg: Message) -> None:
    return None


def payload_of(msg: Message) -> dict[str, Any]:
    """The ``payload`` map of a wrapped message; raises ``BadFrame`` if it is missing."""
    p = msg.get("payload")
    if type(p) is not dict:
        raise BadFrame(f"{msg.get('type')}: 'payload' must be a map")
    return p


def str_field(body: dict[str, Any], name: str, where: str, *, allow_empty: bool = False) -> str:
    """A required string field; raises ``BadFrame`` naming the message and field."""
    v = body.get(name)
    if type(v) is not str or (not v and not allow_empty):
        raise BadFrame(f"{where}: '{name}' must be a non-empty string")
    return v
