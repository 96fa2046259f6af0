"""One logical connection to a TopGun edge: the socket, reconnects with backoff, the auth state
machine and the heartbeat.

The connection owns a single task that loops: connect, authenticate, read frames until the
socket drops, wait a backoff delay, connect again. It knows nothing about maps or queries; it
hands every authenticated-session message to its :class:`SessionHandler` and tells it when a
session becomes usable (``on_session_ready``) and when it ends (``on_session_lost``).

Auth follows TopGun's client (PROTOCOL.md 2.7): with a token (or a token provider) it sends
``AUTH`` as soon as the socket opens and again on ``AUTH_REQUIRED``; on ``AUTH_FAIL`` it forgets
the token, and the provider is asked again on the next attempt. Without a token it sends
``DEVICE_HELLO`` and proceeds after ``DEVICE_ACK``, after any other server message, or after a
short grace period; an ``AUTH_REQUIRED`` then parks it until :meth:`Connection.set_token`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import aiohttp

from libs.client import _protocol as proto

log = logging.getLogger("topgun.client")

TokenProvider = Callable[[], "str | Awaitable[str | None] | None"]


class Status(StrEnum):
    """Where the client stands with its server."""

    CONNECTING = "CONNECTING"
    AUTHENTICATING = "AUTHENTICATING"
    SYNCING = "SYNCING"
    READY = "READY"
    OFFLINE = "OFFLINE"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Timing of reconnects and heartbeats. The defaults are TopGun's client defaults."""

    backoff_base: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    jitter_low: float = 0.5
    jitter_high: float = 1.5
    connect_timeout: float = 10.0
    send_timeout: float = 10.0
    auth_timeout: float = 15.0
    ping_interval: float = 5.0
    pong_timeout: float = 15.0
    device_grace: float = 0.5
    max_frame_bytes: int = 64 * 1024 * 1024
    outbound_frames: int = 1024

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before reconnect attempt ``attempt`` (1-based): exponential, capped, jittered."""
        raw = min(self.backoff_max, self.backoff_base * self.backoff_factor ** max(0, attempt - 1))
        return raw * rng.uniform(self.jitter_low, self.jitter_high)


class SessionHandler(Protocol):
    """What the connection drives: the client's sync engine."""

    def on_session_ready(self) -> None:
        """The socket is authenticated (or needs no auth): re-send state, start syncs."""

    def on_session_lost(self) -> None:
        """The socket is gone; everything in flight on it is void."""

    def on_message(self, msg: proto.ServerMessage) -> None:
        """A message of the authenticated session. Must not raise for a well-typed message."""

    def on_status(self, status: Status) -> None:
        """The status changed."""


class NotConnected(ConnectionError):
    """The operation needs a live, authenticated session and there is none."""


class Connection:
    """Keeps one WebSocket to ``url`` alive until :meth:`close`."""

    def __init__(
        self,
        url: str,
        handler: SessionHandler,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        device_token: str | None = None,
        options: ConnectionOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self._handler = handler
        self._token = token
        self._token_provider = token_provider
        self.device_token = device_token
        self.options = options or ConnectionOptions()
        self._rng = rng or random.Random()
        self._status = Status.OFFLINE
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ready = False
        self._auth_failed = False
        self._closing = False
        self._wake = asyncio.Event()  # interrupts a backoff wait (close, set_token)
        self._token_set = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._out: deque[bytes] = deque()
        self._out_ready = asyncio.Event()
        self._out_space = asyncio.Event()
        self._out_space.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._last_inbound = time.monotonic()
        self.user_id: str | None = None
        self.sessions = 0  # authenticated sessions so far
        self.bad_frames = 0

    # --- public -------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    @property
    def ready(self) -> bool:
        """True while an authenticated session is up."""
        return self._ready

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="topgun-conn")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._token_set.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_status(Status.OFFLINE)

    def set_status(self, status: Status) -> None:
        """Set a status the session handler decides (``SYNCING``, ``READY``)."""
        if self._ready:
            self._set_status(status)

    def set_token(self, token: str | None) -> None:
        """Use ``token`` from now on; a parked session authenticates with it at once."""
        self._token = token
        self._auth_failed = False
        self._token_set.set()
        self._wake.set()

    def send_nowait(self, msg: Mapping[str, Any]) -> bool:
        """Queue ``msg`` on the current session; False (and nothing sent) if there is none.

        Used for protocol replies driven by inbound frames, whose number the protocol bounds.
        """
        if not self._ready:
            return False
        self._out.append(proto.encode_message(msg))
        self._out_ready.set()
        self._drained.clear()
        if len(self._out) >= self.options.outbound_frames:
            self._out_space.clear()
        return True

    async def send(self, msg: Mapping[str, Any]) -> bool:
        """Queue ``msg``, waiting while the outbound queue is full; False if not connected."""
        while self._ready and not self._out_space.is_set():
            await self._out_space.wait()
        return self.send_nowait(msg)

    async def drain(self, timeout: float | None = 10.0) -> None:
        """Wait until everything queued so far has been written to the socket."""
        await asyncio.wait_for(self._drained.wait(), timeout)

    def reconnect(self) -> None:
        """Drop the current socket (if any); the run loop connects again."""
        ws = self._ws
        if ws is not None and not ws.closed:
            asyncio.get_running_loop().create_task(ws.close())

    # --- the run loop ---------------------------------------------------------------------------

    def _set_status(self, status: Status) -> None:
        if status is self._status:
            return
        self._status = status
        try:
            self._handler.on_status(status)
        except Exception:
            log.exception("status callback failed")

    async def _run(self) -> None:
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, connect=self.options.connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._closing:
                self._set_status(Status.CONNECTING)
                ws: aiohttp.ClientWebSocketResponse | None = None
                try:
                    ws = await asyncio.wait_for(
                        session.ws_connect(
                            self.url,
                            max_msg_size=self.options.max_frame_bytes,
                            autoping=True,
                        ),
                        self.options.connect_timeout,
                    )
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    log.info("connect to %s failed: %s", self.url, e or type(e).__name__)
                if ws is not None:
                    authed = await self._session(ws)
                    if authed:
                        attempt = 0
                if self._closing:
                    break
                attempt += 1
                if not self._auth_failed:
                    self._set_status(Status.OFFLINE)
                delay = self.options.backoff(attempt, self._rng)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _token_now(self) -> str | None:
        if self._token is None and self._token_provider is not None and not self._closing:
            try:
                got = self._token_provider()
                if inspect.isawaitable(got):
                    got = await got
            except Exception:
                log.exception("token provider failed")
                got = None
            self._token = got or None
        return self._token

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Run one socket until it closes; True if it got authenticated."""
        self._ws = ws
        self._out.clear()
        self._out_space.set()
        self._last_inbound = time.monotonic()
        state = _AuthState()
        writer = asyncio.create_task(self._writer(ws), name="topgun-writer")
        timers = state.tasks
        try:
            self._set_status(Status.ERROR if self._auth_failed else Status.AUTHENTICATING)
            token = await self._token_now()
            if token:
                state.sent_auth = True
                await self._raw_send(ws, proto.auth(token, self.device_token))
            else:
                await self._raw_send(ws, proto.device_hello(self.device_token))
                timers.append(asyncio.create_task(self._grace(state)))
            timers.append(asyncio.create_task(self._auth_deadline(ws, state)))
            async for frame in ws:
                self._last_inbound = time.monotonic()
                if frame.type is aiohttp.WSMsgType.BINARY:
                    data: bytes | str = frame.data
                elif frame.type is aiohttp.WSMsgType.TEXT:
                    data = frame.data
                else:
                    break
                try:
                    msgs = proto.parse_server_frame(data)
                except proto.BadServerFrame as e:
                    self.bad_frames += 1
                    log.warning("dropped a bad server frame: %s", e)
                    continue
                for msg in msgs:
                    try:
                        await self._dispatch(ws, msg, state)
                    except Exception:
                        self.bad_frames += 1
                        log.exception("failed to handle %s; dropped", type(msg).__name__)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.info("connection to %s lost: %s", self.url, e or type(e).__name__)
        except Exception:
            log.exception("session with %s failed", self.url)
        finally:
            was_ready = self._ready
            self._ready = False
            self._out_space.set()
            self._out.clear()
            self._drained.set()
            self._ws = None
            for t in [writer, *timers]:
                t.cancel()
            for t in [writer, *timers]:
                with contextlib.suppress(BaseException):
                    await t
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2.0)
            if was_ready:
                try:
                    self._handler.on_session_lost()
                except Exception:
                    log.exception("session-lost handler failed")
        return state.authenticated

    async def _dispatch(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        msg: proto.ServerMessage,
        state: _AuthState,
    ) -> None:
        if isinstance(msg, proto.Pong):
            return
        if isinstance(msg, proto.AuthRequired):
            if state.authenticated:
                return
            token = await self._token_now()
            if token:
                state.sent_auth = True
                await self._raw_send(ws, proto.auth(token, self.device_token))
            else:
                state.parked = True
                self._set_status(Status.ERROR if self._auth_failed else Status.AUTHENTICATING)
                state.tasks.append(asyncio.create_task(self._await_token(ws, state)))
            return
        if isinstance(msg, proto.AuthAck):
            self.user_id = msg.user_id
            if msg.device_token:
                self.device_token = msg.device_token
            self._authenticated(ws, state)
            return
        if isinstance(msg, proto.DeviceAck):
            if msg.device_token:
                self.device_token = msg.device_token
            if not state.parked:
                self._authenticated(ws, state)
            return
        if isinstance(msg, proto.AuthFail):
            log.warning("authentication failed: %s", msg.error)
            self._token = None
            self._auth_failed = True
            self._set_status(Status.ERROR)
            return
        if not state.authenticated:
            if state.sent_auth or state.parked:
                return  # nothing but auth traffic counts before AUTH_ACK
            # A token-less client talking to an auth-optional server: any message means go.
            self._authenticated(ws, state)
        self._handler.on_message(msg)

    def _authenticated(self, ws: aiohttp.ClientWebSocketResponse, state: _AuthState) -> None:
        if state.authenticated or ws.closed:
            return
        state.authenticated = True
        self._auth_failed = False
        self._ready = True
        self.sessions += 1
        state.tasks.append(asyncio.create_task(self._pinger(ws)))
        self._handler.on_session_ready()

    async def _grace(self, state: _AuthState) -> None:
        await asyncio.sleep(self.options.device_grace)
        ws = self._ws
        if ws is not None and not state.parked and not state.authenticated:
            self._authenticated(ws, state)

    async def _await_token(self, ws: aiohttp.ClientWebSocketResponse, state: _AuthState) -> None:
        while not ws.closed and not state.authenticated and not self._closing:
            if self._token:
                state.sent_auth = True
                state.parked = False
                self._set_status(Status.AUTHENTICATING)
                await self._raw_send(ws, proto.auth(self._token, self.device_token))
                return
            self._token_set.clear()
            await self._token_set.wait()

    async def _auth_deadline(self, ws: aiohttp.ClientWebSocketResponse, state: _AuthState) -> None:
        await asyncio.sleep(self.options.auth_timeout)
        if not state.authenticated and not state.parked and not ws.closed:
            log.warning("no answer to authentication within %.1fs", self.options.auth_timeout)
            await ws.close()

    async def _pinger(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self.options.ping_interval)
            if time.monotonic() - self._last_inbound > self.options.pong_timeout:
                log.warning(
                    "no frame from the server for %.1fs; reconnecting", self.options.pong_timeout
                )
                await ws.close()
                return
            self.send_nowait(proto.ping(int(time.time() * 1000)))

    async def _raw_send(self, ws: aiohttp.ClientWebSocketResponse, msg: Mapping[str, Any]) -> None:
        await asyncio.wait_for(ws.send_bytes(proto.encode_message(msg)), self.options.send_timeout)

    async def _writer(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while not ws.closed:
                if not self._out:
                    self._out_ready.clear()
                    await self._out_ready.wait()
                    continue
                data = self._out.popleft()
                if len(self._out) < self.options.outbound_frames // 2:
                    self._out_space.set()
                await asyncio.wait_for(ws.send_bytes(data), self.options.send_timeout)
                if not self._out:
                    self._drained.set()
        except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as e:
            log.info("send failed: %s", e or type(e).__name__)
            with contextlib.suppress(Exception):
                await ws.close()


@dataclass(slots=True)
class _AuthState:
    """One socket's progress through authentication, and the timers it owns."""

    sent_auth: bool = False
    parked: bool = False
    authenticated: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
