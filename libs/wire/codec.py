"""MsgPack in and out of the client protocol, and the two BATCH byte layouts.

``decode`` is the one place where client bytes become a message map: it caps the size, refuses
nesting deeper than the limit, and turns every failure into a ``ProtocolError``. ``encode`` writes
server frames with plain msgpack (the client reads any valid MsgPack); ``encode_js`` writes bytes
identical to the TypeScript client's serializer.

The depth check costs a small fraction of the decode: msgpack's C parser already refuses nesting
beyond its fixed stack (1024 levels), so the frame is skipped once (parsed without building
objects) behind ``1024 - max_depth`` one-element array headers, and the parser's own stack limit
fires exactly when the frame nests deeper than ``max_depth``. Frames too small to hold that many
containers are not scanned at all.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import msgpack

from libs.wire.errors import BadFrame, TooDeep, TooLarge
from libs.wire.js_encoding import encode_js

MAX_FRAME_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 256
MAX_BATCH_ITEMS = 8192

_BYTE_KINDS = (bytes, bytearray)


def _probe_stack_limit() -> int:
    """The nesting msgpack's C parser accepts before raising ``StackError`` (1024 in 1.x)."""
    lo, hi = 1, 4096
    while lo < hi:
        mid = (lo + hi + 1) // 2
        unpacker = msgpack.Unpacker()
        unpacker.feed(b"\x91" * mid + b"\xc0")
        try:
            unpacker.skip()
        except msgpack.StackError:
            hi = mid - 1
        else:
            lo = mid
    return lo


_STACK_LIMIT = _probe_stack_limit()
_WRAPPER_BYTE = b"\x91"  # fixarray of one element

# Bytes that can start a container (fixmap, fixarray, array16/32, map16/32). A frame holding no
# more of them than the depth limit cannot nest deeper than the limit.
_NOT_CONTAINER_HEADER = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))
_HEADER_COUNT_MAX_LEN = 4096


def check_depth(data: bytes | bytearray, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` when ``data`` nests containers more than ``max_depth`` levels.

    Every container counts, empty or not; the top-level map is level 1. ``data`` must be
    complete MsgPack (a truncated frame raises ``BadFrame``).
    """
    n = len(data)
    if n <= max_depth:
        return
    if n <= _HEADER_COUNT_MAX_LEN and len(data.translate(None, _NOT_CONTAINER_HEADER)) <= max_depth:
        return
    wrappers = _STACK_LIMIT - min(max_depth, _STACK_LIMIT)
    unpacker = msgpack.Unpacker(max_buffer_size=n + wrappers)
    if wrappers:
        unpacker.feed(_WRAPPER_BYTE * wrappers)
    unpacker.feed(data)
    try:
        unpacker.skip()
    except msgpack.StackError:
        raise TooDeep(
            f"frame rejected: MsgPack containers nest more than {max_depth} levels deep"
        ) from None
    except msgpack.OutOfData:
        raise BadFrame("frame is not valid MsgPack: the bytes end inside a value") from None
    except Exception as exc:
        raise BadFrame(f"frame is not valid MsgPack: {_reason(exc)}") from None


def decode_value(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = MAX_FRAME_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Any single MsgPack value, size- and depth-checked; raises ``TooLarge``, ``TooDeep`` or
    ``BadFrame`` and nothing else.

    Strings decode with ``surrogatepass`` (the client writes lone surrogates in short strings
    as 3-byte sequences), ``bin`` becomes ``bytes``, map keys may be any hashable scalar.
    """
    if not isinstance(data, _BYTE_KINDS):
        if not isinstance(data, memoryview):
            raise BadFrame(f"frame must be bytes, got {type(data).__name__}")
        data = data.tobytes()
    if len(data) > max_bytes:
        raise TooLarge(
            f"frame of {len(data)} bytes exceeds the {max_bytes}-byte limit; "
            "split the work into smaller messages"
        )
    if not data:
        raise BadFrame("frame is empty; expected one MsgPack map")
    check_depth(data, max_depth)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            unicode_errors="surrogatepass",
        )
    except msgpack.ExtraData as exc:
        raise BadFrame(
            f"frame holds more than one MsgPack value ({len(data) - len(exc.extra)} bytes "
            f"used, {len(exc.extra)} left over); send one message per frame"
        ) from None
    except msgpack.StackError:
        raise TooDeep(
            f"frame rejected: MsgPack containers nest more than {_STACK_LIMIT} levels deep"
        ) from None
    except (msgpack.OutOfData, msgpack.FormatError) as exc:
        raise BadFrame(f"frame is not valid MsgPack: {_reason(exc)}") from None
    except TypeError as exc:
        raise BadFrame(f"frame is not usable MsgPack: {exc} (map keys must be scalars)") from None
    except Exception as exc:
        raise BadFrame(f"frame is not valid MsgPack: {_reason(exc)}") from None


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = MAX_FRAME_BYTES,
    max_depth: int = MAX_DEPTH,
) -> dict[Any, Any]:
    """A client message: a MsgPack map whose ``"type"`` is a string.

    Raises ``TooLarge`` (over ``max_bytes``), ``TooDeep`` (nesting over ``max_depth``) or
    ``BadFrame`` (anything else wrong) and never any other exception.
    """
    msg = decode_value(data, max_bytes=max_bytes, max_depth=max_depth)
    if type(msg) is not dict:
        raise BadFrame(f"frame must be a MsgPack map with a string 'type', got {_kind(msg)}")
    kind = msg.get("type")
    if type(kind) is not str:
        if "type" not in msg:
            raise BadFrame("frame has no 'type' field; every message is {type: 'NAME', ...}")
        raise BadFrame(f"frame field 'type' must be a string, got {_kind(kind)}")
    return msg


def encode(obj: Any) -> bytes:
    """Standard MsgPack for a server frame (``bin`` for bytes); the client accepts any valid
    MsgPack, so this is the fast path. Raises ``TypeError`` for values MsgPack cannot hold."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack_inbound_batch(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The messages inside a client-sent ``BATCH.data``: ``[u32 BE length][message]`` repeated,
    no leading count (the HEAD server's layout). A truncated tail ends the list.

    Raises ``TooLarge`` when it holds more than 8192 complete items; the items themselves are
    not decoded here (each gets its own ``decode``).
    """
    view = memoryview(data)
    end = len(view)
    pos = 0
    items: list[bytes] = []
    append = items.append
    unpack_len = _U32_BE.unpack_from
    while pos + 4 <= end:
        (length,) = unpack_len(view, pos)
        start = pos + 4
        stop = start + length
        if stop > end:
            break
        if len(items) == MAX_BATCH_ITEMS:
            raise TooLarge(
                f"BATCH holds more than {MAX_BATCH_ITEMS} messages; send at most "
                f"{MAX_BATCH_ITEMS} per BATCH"
            )
        append(view[start:stop].tobytes())
        pos = stop
    return items


def count_inbound_batch_items(
    data: bytes | bytearray | memoryview, limit: int | None = None
) -> int:
    """How many complete items a client-sent ``BATCH.data`` holds (the same walk as
    ``unpack_inbound_batch``, without copying or a cap), stopping early at ``limit``.

    The rate limiter charges a BATCH this count before it is unpacked (PROTOCOL.md 1.5), so
    an oversized BATCH still costs what it carries even though it is then refused."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    count = 0
    unpack_len = _U32_BE.unpack_from
    while pos + 4 <= end:
        (length,) = unpack_len(view, pos)
        pos += 4 + length
        if pos > end:
            break
        count += 1
        if limit is not None and count >= limit:
            break
    return count


def pack_outbound_batch(frames: Iterable[bytes]) -> bytes:
    """``BATCH.data`` as the client reads it: u32 LE count, then u32 LE length and the encoded
    message for each frame."""
    frames = list(frames)
    parts: list[bytes] = [_U32_LE.pack(len(frames))]
    for frame in frames:
        parts.append(_U32_LE.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def pack_inbound_batch(frames: Iterable[bytes]) -> bytes:
    """``BATCH.data`` in the layout a server accepts from clients (u32 BE length + message per
    frame, no count): for clients and tests that send BATCH."""
    return b"".join(_U32_BE.pack(len(f)) + f for f in frames)


_U32_BE = struct.Struct(">I")
_U32_LE = struct.Struct("<I")


def _reason(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, msgpack.FormatError) and not text:
        return "a byte that starts no MsgPack value (such as 0xc1)"
    return text or type(exc).__name__


def _kind(value: Any) -> str:
    """The MsgPack name of a decoded value, for error messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bin"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


__all__ = [
    "MAX_BATCH_ITEMS",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "check_depth",
    "count_inbound_batch_items",
    "decode",
    "decode_value",
    "encode",
    "encode_js",
    "pack_inbound_batch",
    "pack_outbound_batch",
    "unpack_inbound_batch",
]
