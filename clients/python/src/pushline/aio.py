"""An asyncio client for ASGI apps (FastAPI, Starlette, Django async views).

The same methods as :class:`pushline.Client`, as coroutines:

>>> import pushline.aio
>>> async def main():                                       # doctest: +SKIP
...     async with pushline.aio.AsyncClient("/run/pushline/pushline.sock") as pl:
...         await pl.register(platform="fcm", registration_id=token, user=42)
...         r = await pl.send(users=["42"], message="Your order shipped")
...         print(r.sent, [x.reason_class for x in r.failures])

Connections: a small pool (``max_connections``, default 8) per event loop; each
request has a connection to itself for its round trip, so a slow ``send`` never
holds back another task's ``register``. Timeouts, reconnects and errors are as
in the blocking client: ``timeout`` (default 75 s, longer than the daemon's 30 s
provider deadline) per request or per call, ``connect_timeout`` (5 s) for
connecting; a request whose connection broke after it was written is re-sent
only for the read-only commands and ``update``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional

from ._commands import DEFAULT, Commands, _args, list_arg
from .client import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET, DEFAULT_TIMEOUT, IDEMPOTENT_COMMANDS, PROTOCOL_MAJOR,
                     BulkChunkError, BulkResult, _encode, _parse_response, _result)
from .errors import (ArgumentTypeError, Busy, ConnectionError, ConnectionTimeout, ProtocolVersionError,
                     PushlineError)

__all__ = ["AsyncClient", "AsyncEventStream"]

#: The most a response line may hold before the client gives up (protocol.md section 1:
#: lines have no fixed maximum; 100,000 results are tens of MB).
MAX_RESPONSE_BYTES = 1 << 30

JSONDict = Dict[str, Any]


class _AConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next_id = 1
        self.server: JSONDict = {}

    def take_id(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid

    @property
    def stale(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing() or len(self.reader._buffer) > 0  # type: ignore[attr-defined]

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # pragma: no cover - closing a broken transport
            pass

    async def read_line(self) -> bytes:
        while True:
            try:
                line = await self.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise _Closed() from None
            except asyncio.LimitOverrunError:
                raise ConnectionError(f"response line over {MAX_RESPONSE_BYTES} bytes") from None
            if line.strip():
                return line.rstrip(b"\r\n")


class _Closed(Exception):
    pass


class AsyncClient(Commands):
    """An asyncio client for the Pushline daemon (same methods as :class:`pushline.Client`,
    awaited). ``socket_path`` defaults to ``PUSHLINE_SOCKET``, then ``./var/pushline.sock``."""

    def __init__(self, socket_path: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT, max_connections: int = 8) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.socket_path: str = socket_path or os.environ.get("PUSHLINE_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        if timeout is not None and self.connect_timeout is not None:
            self.connect_timeout = min(self.connect_timeout, timeout)
        self.max_connections = max_connections
        self._idle: List[_AConn] = []
        self._slots: Optional[asyncio.Semaphore] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def __repr__(self) -> str:
        return f"AsyncClient(socket_path={self.socket_path!r}, timeout={self.timeout!r})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the idle connections (those in use close when their request ends)."""
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()
            try:
                await c.writer.wait_closed()
            except Exception:  # pragma: no cover
                pass

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            # A new event loop (e.g. a test per loop): connections of the old one are unusable.
            self._idle = []
            self._slots = asyncio.Semaphore(self.max_connections)
            self._loop = loop
        return self._slots

    async def _open(self) -> _AConn:
        ct = self.connect_timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path, limit=MAX_RESPONSE_BYTES), ct)
        except FileNotFoundError:
            raise ConnectionError(f"no Pushline socket at '{self.socket_path}' (is the daemon running? "
                                  "set PUSHLINE_SOCKET or pass socket_path)", {"socket": self.socket_path}) from None
        except ConnectionRefusedError:
            raise ConnectionError(f"connection to '{self.socket_path}' refused (stale socket file: is the daemon "
                                  "running?)", {"socket": self.socket_path}) from None
        except asyncio.TimeoutError:
            raise ConnectionTimeout(f"connecting to '{self.socket_path}' timed out after {ct} s",
                                    {"socket": self.socket_path}) from None
        except OSError as e:
            raise ConnectionError(f"cannot connect to '{self.socket_path}': {e.strerror or e}",
                                  {"socket": self.socket_path}) from None
        conn = _AConn(reader, writer)
        try:
            rid = conn.take_id()
            writer.write(_encode({"id": rid, "cmd": "ping"}))
            info = _result(_parse_response(await asyncio.wait_for(conn.read_line(), ct), rid))
        except PushlineError:
            conn.close()
            raise
        except asyncio.TimeoutError:
            conn.close()
            raise ConnectionTimeout(f"no answer to ping from '{self.socket_path}' within {ct} s") from None
        except (_Closed, OSError) as e:
            conn.close()
            raise ConnectionError(f"'{self.socket_path}' failed during the version check: {e}") from None
        protocol = str(info.get("protocol", ""))
        if protocol.split(".")[0] != PROTOCOL_MAJOR:
            conn.close()
            raise ProtocolVersionError(
                f"the daemon at '{self.socket_path}' speaks protocol {protocol or '(none)'}, "
                f"this client speaks {PROTOCOL_MAJOR}.x: upgrade the client or the daemon",
                {"protocol": protocol, "version": info.get("version")})
        conn.server = info
        return conn

    async def _take(self, fresh: bool) -> _AConn:
        while self._idle and not fresh:
            c = self._idle.pop()
            if not c.stale:
                return c
            c.close()
        return await self._open()

    async def _request(self, cmd: str, request: JSONDict, wrap: type, timeout: Any) -> Any:
        request["cmd"] = cmd
        t = self.timeout if timeout is DEFAULT else timeout
        async with self._semaphore():
            return wrap(_result(await self._roundtrip(request, t)))

    async def _roundtrip(self, request: JSONDict, timeout: Optional[float]) -> JSONDict:
        cmd = request.get("cmd")
        for attempt in (0, 1):
            conn = await self._take(fresh=attempt > 0)
            rid = conn.take_id()
            try:
                conn.writer.write(_encode({"id": rid, **request}))
                await asyncio.wait_for(conn.writer.drain(), timeout)
            except asyncio.TimeoutError:
                conn.close()
                raise ConnectionTimeout(f"writing '{cmd}' to '{self.socket_path}' timed out after {timeout} s",
                                        request_sent=True) from None
            except OSError as e:
                conn.close()
                if attempt == 0:
                    continue
                raise ConnectionError(f"cannot write to '{self.socket_path}': {e.strerror or e}") from None
            try:
                resp = _parse_response(await asyncio.wait_for(conn.read_line(), timeout), rid)
            except asyncio.TimeoutError:
                conn.close()
                raise ConnectionTimeout(f"no response to '{cmd}' within {timeout} s "
                                        "(the daemon may still carry it out)", request_sent=True) from None
            except (_Closed, OSError) as e:
                conn.close()
                if attempt == 0 and cmd in IDEMPOTENT_COMMANDS:
                    continue
                raise ConnectionError(f"'{self.socket_path}' closed the connection before the response to '{cmd}' "
                                      f"arrived (the daemon may have carried it out): {e}", request_sent=True) from None
            except BaseException:
                conn.close()
                raise
            self._idle.append(conn)
            return resp
        raise ConnectionError(f"cannot reach '{self.socket_path}'")  # pragma: no cover

    async def iter_devices(self, *, page_size: int = 1000, **filters: Any) -> AsyncIterator[JSONDict]:
        """Yields every device matching the ``devices`` filters, page after page.

        >>> async for d in pl.iter_devices(user="42"):     # doctest: +SKIP
        ...     print(d.id)
        """
        after = filters.pop("after", None)
        while True:
            page = await self.devices(limit=page_size, after=after, **filters)
            for d in page.devices:
                yield d
            after = page.next
            if after is None:
                return

    def events(self, *, after: int = 0, limit: int = 1000, wait_ms: int = 30000, stop_when_idle: bool = False,
               reconnect: bool = True, reconnect_delay: float = 1.0) -> "AsyncEventStream":
        """The ``events`` feed as an async iterator (see :class:`pushline.EventStream`); ``cursor``
        is the ``seq`` of the last event returned.

        >>> stream = pl.events(after=cursor)                 # doctest: +SKIP
        >>> async for e in stream:                           # doctest: +SKIP
        ...     handle(e); save(stream.cursor)
        """
        return AsyncEventStream(self, after, limit, wait_ms, stop_when_idle, reconnect, reconnect_delay)

    async def bulk_send(self, targets: Iterable[Any], chunk: int = 10000, *, target: str = "ids",
                        platform: Optional[str] = None, app: Optional[str] = None, window: int = 4,
                        collect_results: bool = True, busy_retries: int = 20, **notification: Any) -> BulkResult:
        """Sends one notification to a long target list as ``bulk`` requests of ``chunk`` targets,
        ``window`` at a time (each on its own pooled connection); ``busy`` is retried after
        ``retry_after_ms``; a request that fails as a whole lands in ``errors``."""
        if target not in ("ids", "registration_ids", "users"):
            raise ValueError("target must be 'ids', 'registration_ids' or 'users'")
        if isinstance(targets, (str, bytes, bytearray, int)) or not isinstance(targets, Iterable):
            raise ArgumentTypeError("targets", f"expected an iterable of {target}, got {type(targets).__name__}")
        if chunk < 1 or window < 1:
            raise ValueError("chunk and window must be at least 1")
        kind = {"ids": "id", "registration_ids": "token", "users": "user"}[target]
        common = _args(platform=platform, app=app, **notification)
        result = BulkResult()
        gate = asyncio.Semaphore(window)

        async def one(index: int, items: List[Any]) -> None:
            async with gate:
                for attempt in range(busy_retries + 1):
                    result.requests += 1
                    try:
                        r = await self.call("bulk", **{target: items}, **common)
                    except Busy as e:
                        if attempt < busy_retries:
                            await asyncio.sleep((e.retry_after_ms or 100) / 1000.0)
                            continue
                        result.errors.append(BulkChunkError(index, items, e))
                        return
                    except (ConnectionError, ProtocolVersionError):
                        raise
                    except PushlineError as e:
                        result.errors.append(BulkChunkError(index, items, e))
                        return
                    result.sent += int(r.get("sent", 0))
                    result.failed += int(r.get("failed", 0))
                    if collect_results:
                        result.results.extend(r.get("results", []))
                    return

        tasks: List["asyncio.Task[None]"] = []
        batch: List[Any] = []
        try:
            for t in targets:
                batch.append(t)
                if len(batch) >= chunk:
                    tasks.append(asyncio.ensure_future(one(len(tasks), list_arg("targets", batch, kind) or [])))
                    batch = []
            if batch:
                tasks.append(asyncio.ensure_future(one(len(tasks), list_arg("targets", batch, kind) or [])))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        result.errors.sort(key=lambda e: e.index)
        return result


class AsyncEventStream:
    """The asyncio form of :class:`pushline.EventStream` (same ``cursor``, reconnect and stop rules)."""

    def __init__(self, client: "AsyncClient", after: int, limit: int, wait_ms: int, stop_when_idle: bool,
                 reconnect: bool, reconnect_delay: float) -> None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ArgumentTypeError("after", f"expected a seq (integer >= 0), got {after!r:.40}")
        self._client = client
        self.cursor = after
        self.limit = limit
        self.wait_ms = wait_ms
        self.stop_when_idle = stop_when_idle
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self._buf: List[Any] = []

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> Any:
        from .client import _TRANSIENT
        while not self._buf:
            try:
                page = await self._client.events_page(after=self.cursor, limit=self.limit, wait_ms=self.wait_ms)
            except _TRANSIENT:
                if not self.reconnect:
                    raise
                await asyncio.sleep(self.reconnect_delay)
                continue
            self._buf.extend(page.events)
            if not page.events and self.stop_when_idle:
                raise StopAsyncIteration
        event = self._buf.pop(0)
        self.cursor = event.seq
        return event
