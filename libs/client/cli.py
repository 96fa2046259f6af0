"""``python -m topgun``: the SDK from a shell.

    python -m topgun put todos t1 '{"title": "milk"}'
    python -m topgun get todos t1
    python -m topgun query todos --where done=false --sort title:asc --limit 10
    python -m topgun watch todos                  # live changes until Ctrl-C
    python -m topgun publish chat '{"text": "hi"}'
    python -m topgun subscribe chat               # messages until Ctrl-C

Results are printed as JSON, one document per line, on stdout; logs go to stderr. The server
is ``--url`` (or ``TOPGUN_URL``), the token ``--token`` (or ``TOPGUN_TOKEN``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from libs.client._client import TopGunClient
from libs.client._connection import NotConnected
from libs.runtime import env_default, setup_logging

DEFAULT_URL = "ws://127.0.0.1:8080/ws"

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_UNACKED = 2
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130


def _dump(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=repr) + "\n")
    sys.stdout.flush()


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"not JSON: {text!r} ({e}); quote strings, e.g. '\"milk\"'"
        ) from None


def _where_arg(text: str) -> dict[str, Any]:
    """``field=value`` (value read as JSON when it parses, else as a string) or a JSON map."""
    if text.lstrip().startswith("{"):
        doc = _json_arg(text)
        if not isinstance(doc, dict):
            raise argparse.ArgumentTypeError("--where JSON must be an object")
        return doc
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--where {text!r}: expected field=value or a JSON map")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return {name: value}


def _add_query_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("map", help="map name")
    p.add_argument(
        "--where",
        type=_where_arg,
        action="append",
        default=[],
        help="field=value (repeatable; value read as JSON if it parses) or a JSON object",
    )
    p.add_argument("--predicate", type=_json_arg, help="a TopGun predicate tree as JSON")
    p.add_argument("--sort", help="field[:asc|desc][,field2[:dir]...]")
    p.add_argument("--limit", type=int, help="at most this many rows")
    p.add_argument("--fields", help="comma-separated fields to keep in each value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m topgun",
        description="Read, write, query and watch TopGun maps; publish and subscribe to topics.",
    )
    parser.add_argument(
        "--url",
        default=env_default("TOPGUN_URL", DEFAULT_URL),
        help=f"server WebSocket URL (env TOPGUN_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=env_default("TOPGUN_TOKEN", ""),
        help="JWT for servers that require auth (env TOPGUN_TOKEN)",
    )
    parser.add_argument(
        "--store",
        default=":memory:",
        help="SQLite file for the local replica and op log; writes made while the server is "
        "unreachable stay there and are sent on the next run (default: in memory)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("put", help="write a value (JSON) under a key and wait for the ack")
    p.add_argument("map")
    p.add_argument("key")
    p.add_argument("value", type=_json_arg, help="the value as JSON")

    p = sub.add_parser("get", help="print the value of one key")
    p.add_argument("map")
    p.add_argument("key")

    p = sub.add_parser("remove", help="delete a key and wait for the ack")
    p.add_argument("map")
    p.add_argument("key")

    p = sub.add_parser("query", help="print the rows matching a query, one JSON line each")
    _add_query_options(p)

    p = sub.add_parser("watch", help="print a live query's changes until Ctrl-C")
    _add_query_options(p)

    p = sub.add_parser("publish", help="publish a message (JSON) on a topic")
    p.add_argument("topic")
    p.add_argument("data", type=_json_arg, help="the message as JSON")

    p = sub.add_parser("subscribe", help="print a topic's messages until Ctrl-C")
    p.add_argument("topic")
    return parser


def _query_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    where: dict[str, Any] | None = None
    if args.where:
        where = {}
        for part in args.where:
            where.update(part)
    return {
        "where": where,
        "predicate": args.predicate,
        "sort": args.sort,
        "limit": args.limit,
        "fields": args.fields.split(",") if args.fields else None,
    }


async def _run(args: argparse.Namespace) -> int:
    client = TopGunClient(args.url, args.token or None, store=args.store)
    async with client:
        cmd = args.command
        if cmd in ("put", "remove"):
            m = client.lww_map(args.map)
            op = m.set(args.key, args.value) if cmd == "put" else m.remove(args.key)
            try:
                level = await client.wait_acked(op, args.timeout)
            except (TimeoutError, NotConnected):
                queued = args.store != ":memory:"
                _dump({"ok": False, "op": op.id, "queued": queued})
                print(
                    f"no acknowledgement within {args.timeout}s"
                    + (f"; the write stays queued in {args.store}" if queued else ""),
                    file=sys.stderr,
                )
                return EXIT_UNACKED
            _dump({"ok": True, "op": op.id, "level": level})
            return EXIT_OK
        if cmd == "get":
            res = await client.query_once(
                args.map,
                predicate={"op": "eq", "attribute": "_key", "value": args.key},
                timeout=args.timeout,
            )
            if not res.rows:
                print(f"{args.map}/{args.key}: not found", file=sys.stderr)
                return EXIT_NOT_FOUND
            _dump(res.rows[0][1])
            return EXIT_OK
        if cmd == "query":
            res = await client.query_once(args.map, timeout=args.timeout, **_query_kwargs(args))
            for key, value in res.rows:
                _dump({"key": key, "value": value})
            return EXIT_OK
        if cmd == "watch":
            q = client.query(args.map, **_query_kwargs(args))
            changes = q.changes()
            snap = await q.ready(args.timeout)
            for key, value in snap.rows:
                _dump({"change": "SNAPSHOT", "key": key, "value": value})
            async for ch in changes:
                _dump({"change": ch.kind, "key": ch.key, "value": ch.value})
            return EXIT_OK
        if cmd == "publish":
            await client.wait_ready(args.timeout)
            await client.publish(args.topic, args.data)
            await client.conn.drain(args.timeout)
            _dump({"ok": True})
            return EXIT_OK
        if cmd == "subscribe":
            sub = client.subscribe(args.topic)
            async for msg in sub:
                _dump({"topic": msg.topic, "data": msg.data, "publisherId": msg.publisher_id})
            return EXIT_OK
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO" if args.verbose else "WARNING", "topgun")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except TimeoutError:
        print(f"the server at {args.url} did not answer within {args.timeout}s", file=sys.stderr)
        return EXIT_UNACKED
    except (ValueError, TypeError) as e:
        logging.getLogger("topgun").debug("usage error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
