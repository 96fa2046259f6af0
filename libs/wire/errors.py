"""What can go wrong at the client wire boundary, each with its wire code.

Every failure to turn client bytes into a typed message is one of these. A handler catches
``ProtocolError`` once and answers with ``err.to_frame()`` (an ``ERROR`` message) or drops the
frame, as PROTOCOL.md section 12 describes; nothing here ever escapes as a bare ``ValueError``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProtocolError(Exception):
    """A client frame or request the server cannot act on.

    ``code`` is the number sent in ``ERROR.payload.code``; ``message`` says what was wrong and,
    where it helps, what to send instead.
    """

    default_code: ClassVar[int] = 400

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code: int = self.default_code if code is None else code
        self.message: str = message

    def to_frame(self) -> dict[str, Any]:
        """The ``ERROR`` message for this failure, ready for ``encode()``."""
        return {"type": "ERROR", "payload": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class BadFrame(ProtocolError):
    """The bytes are not MsgPack, or the message does not have the shape its type requires."""

    default_code = 400


class TooDeep(ProtocolError):
    """Containers nest deeper than the decoder allows (PROTOCOL.md 1.5)."""

    default_code = 400


class Unauthorized(ProtocolError):
    """No valid credentials were presented."""

    default_code = 401


class Forbidden(ProtocolError):
    """The principal may not touch this map or topic."""

    default_code = 403


class TooLarge(ProtocolError):
    """The frame, body or BATCH exceeds a size limit."""

    default_code = 413


class RateLimited(ProtocolError):
    """The connection sent more ops than its rate allows."""

    default_code = 429


class NotSupported(ProtocolError):
    """The message is understood but this server does not implement it."""

    default_code = 501


__all__ = [
    "BadFrame",
    "Forbidden",
    "NotSupported",
    "ProtocolError",
    "RateLimited",
    "TooDeep",
    "TooLarge",
    "Unauthorized",
]
