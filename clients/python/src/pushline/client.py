"""The Pushline client: one method per protocol command (see protocol.md).

>>> from pushline import Client
>>> with Client() as pl:                                    # doctest: +SKIP
...     pl.register(platform="apns", registration_id="4f1c" * 16, user="42")
...     pl.send(users=["42"], message="Your order shipped", badge=1)
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import os
import select
import selectors
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import (Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

from ._commands import DEFAULT, UNSET, Commands, _args, list_arg
from .errors import (ArgumentTypeError, Busy, ConnectionError, ConnectionTimeout, PushlineError,
                     ProtocolVersionError, ShuttingDown, Unavailable, error_from_response)
from .results import Event

__all__ = ["Client", "EventStream", "BulkResult", "BulkChunkError", "UNSET", "PROTOCOL_MAJOR", "DEFAULT_SOCKET", "DEFAULT_TIMEOUT"]

#: The protocol major version this client speaks.
PROTOCOL_MAJOR = "1"
#: The daemon's default socket path, used when neither an argument nor ``PUSHLINE_SOCKET`` names one.
DEFAULT_SOCKET = "./var/pushline.sock"
#: Seconds a request waits for its answer by default: longer than the daemon's own 30 s
#: provider deadline (``request_timeout_ms``) plus its retries, so a slow provider gives a
#: per-device ``timeout`` result rather than a client-side ConnectionTimeout while the send goes on.
DEFAULT_TIMEOUT = 75.0
#: Seconds to connect (and check the version) by default.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: The daemon's default ``max_line_bytes``.
DEFAULT_MAX_LINE_BYTES = 1 << 20

#: Commands that read only (or set absolute values): re-sent once on a new
#: connection when the connection broke after the request was written.
IDEMPOTENT_COMMANDS = frozenset({"ping", "devices", "stats", "topics", "subscribers", "update", "job", "jobs", "cancel",
                                 "events"})

JSONDict = Dict[str, Any]


class _Closed(Exception):
    """The daemon closed the connection (EOF) while a response was awaited."""


def _encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


class _Connection:
    """One Unix-socket connection with a line buffer. Used by one thread at a time."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        self.path = path
        self.timeout = timeout
        self.pid = os.getpid()
        self.buf = bytearray()
        self.scanned = 0
        self.next_id = 1
        self.server: JSONDict = {}
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            sock.close()
            raise ConnectionError(f"no Pushline socket at '{path}' (is the daemon running? "
                                  "set PUSHLINE_SOCKET or pass socket_path)", {"socket": path}) from None
        except ConnectionRefusedError:
            sock.close()
            raise ConnectionError(f"connection to '{path}' refused (stale socket file: is the daemon running?)",
                                  {"socket": path}) from None
        except socket.timeout:
            sock.close()
            raise ConnectionTimeout(f"connecting to '{path}' timed out after {timeout} s", {"socket": path}) from None
        except OSError as e:
            sock.close()
            raise ConnectionError(f"cannot connect to '{path}': {e.strerror or e}", {"socket": path}) from None
        self.sock: Optional[socket.socket] = sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        return self.sock is None

    def is_stale(self) -> bool:
        """True when the daemon closed the connection (or sent something unasked) while idle."""
        sock = self.sock
        if sock is None or self.pid != os.getpid():
            return True
        if self.buf:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        # EOF (b"") or unexpected bytes: either way this connection is not usable.
        return True

    def take_id(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid

    def write(self, data: bytes, timeout: Optional[float] = None) -> None:
        sock = self.sock
        if sock is None:
            raise BrokenPipeError("connection closed")
        sock.settimeout(timeout)
        sock.sendall(data)

    def read_line(self, deadline: Optional[float]) -> bytes:
        sock = self.sock
        if sock is None:
            raise _Closed()
        while True:
            i = self.buf.find(b"\n", self.scanned)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                self.scanned = 0
                if line.strip():
                    return line
                continue
            self.scanned = len(self.buf)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)
            else:
                sock.settimeout(None)
            chunk = sock.recv(1 << 18)
            if not chunk:
                raise _Closed()
            self.buf += chunk


def _parse_response(line: bytes, expected_id: Any) -> JSONDict:
    try:
        resp = json.loads(line)
    except ValueError as e:
        raise ConnectionError(f"daemon sent a line that is not JSON ({e})") from None
    if not isinstance(resp, dict) or "ok" not in resp:
        raise ConnectionError("daemon sent a response without 'ok'")
    rid = resp.get("id")
    # line_too_long (and bad_json) answer with "id": null, since the request was not read.
    if rid != expected_id and not (rid is None and resp.get("ok") is False):
        raise ConnectionError(f"response id {rid!r} does not match request id {expected_id!r}")
    return resp


def _result(resp: JSONDict) -> JSONDict:
    if resp.get("ok") is True:
        return {k: v for k, v in resp.items() if k not in ("id", "ok")}
    raise error_from_response(resp.get("error"))


@dataclass
class BulkChunkError:
    """A ``bulk`` request of :meth:`Client.bulk_send` that failed as a whole (nothing was sent for it)."""

    index: int
    targets: List[Any]
    error: PushlineError


@dataclass
class BulkResult:
    """Merged results of :meth:`Client.bulk_send`."""

    sent: int = 0
    failed: int = 0
    results: List[JSONDict] = field(default_factory=list)
    errors: List[BulkChunkError] = field(default_factory=list)
    requests: int = 0

    @property
    def ok(self) -> bool:
        """True when no chunk failed as a whole (devices may still have failed: see ``failed``)."""
        return not self.errors


#: Errors after which an :class:`EventStream` waits ``reconnect_delay`` and polls again (the
#: daemon restarting, stopping, or briefly unable to read its database).
_TRANSIENT = (ConnectionError, ShuttingDown, Unavailable, Busy)


class EventStream:
    """Iterates over the ``events`` feed from a cursor, long-polling for new events.

    ``cursor`` is the ``seq`` of the last event returned (``after`` before the first): store it
    after handling each event and pass it as ``after`` next time to resume exactly there, across
    restarts of your process or of the daemon. The stream polls again after
    ``reconnect_delay`` seconds when the daemon is unreachable or stopping
    (``reconnect=False`` raises instead); ``stop_when_idle=True`` ends the iteration at the
    first poll that finds nothing new (read what is there, then stop).

    >>> stream = pl.events(after=load_cursor())                 # doctest: +SKIP
    >>> for event in stream:                                    # doctest: +SKIP
    ...     if event.type == "device_deactivated":
    ...         MyDevice.objects.filter(token=event.registration_id).update(active=False)
    ...     save_cursor(stream.cursor)
    """

    def __init__(self, fetch: Any, after: int = 0, limit: int = 1000, wait_ms: int = 30000,
                 stop_when_idle: bool = False, reconnect: bool = True, reconnect_delay: float = 1.0) -> None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ArgumentTypeError("after", f"expected a seq (integer >= 0), got {after!r:.40}")
        self._fetch = fetch
        self.cursor: int = after
        self.limit = limit
        self.wait_ms = wait_ms
        self.stop_when_idle = stop_when_idle
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self._buf: Deque[Event] = collections.deque()

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        while not self._buf:
            try:
                page = self._fetch(after=self.cursor, limit=self.limit, wait_ms=self.wait_ms)
            except _TRANSIENT:
                if not self.reconnect:
                    raise
                time.sleep(self.reconnect_delay)
                continue
            self._buf.extend(page.events)
            if not page.events and self.stop_when_idle:
                raise StopIteration
        event = self._buf.popleft()
        self.cursor = event.seq
        return event


class Client(Commands):
    """A client for the Pushline daemon.

    ``socket_path`` defaults to the ``PUSHLINE_SOCKET`` environment variable,
    then ``./var/pushline.sock``. ``timeout`` (seconds, ``None`` for none)
    bounds each request's round trip (default 75 s, longer than the daemon's
    30 s provider deadline); every method also takes its own ``timeout=``.
    ``connect_timeout`` (default 5 s) bounds connecting and the version check.

    Threads: the client keeps **one connection per thread**
    (``threading.local``), so one ``Client`` can be shared by every thread of
    a web server and a slow ``send`` in one thread never delays another. A
    forked child opens its own connections. Connections open lazily, check
    the protocol version with ``ping`` once, and stay open until
    :meth:`close` (or the end of a ``with`` block).

    Reconnecting: if the daemon closed the connection (e.g. it restarted),
    the next request opens a new connection before writing. If the
    connection breaks *after* a request was written, its response is lost:
    read-only commands and ``update`` are re-sent once on a new connection;
    others (``register``, ``send``...) raise :class:`ConnectionError` with
    ``request_sent=True`` because the daemon may have carried them out.

    >>> with Client("/run/pushline.sock") as pl:            # doctest: +SKIP
    ...     pl.send(users=["42"], message="Deploy done")
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.socket_path: str = socket_path or os.environ.get("PUSHLINE_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        if timeout is not None and self.connect_timeout is not None:
            self.connect_timeout = min(self.connect_timeout, timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: "weakref.WeakSet[_Connection]" = weakref.WeakSet()

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket_path={self.socket_path!r}, timeout={self.timeout!r})"

    def close(self) -> None:
        """Closes every connection this client opened (in any thread). The client stays usable."""
        with self._lock:
            conns = list(self._connections)
            self._connections = weakref.WeakSet()
        for c in conns:
            if c.pid == os.getpid():
                c.close()
        self._local.__dict__.pop("conn", None)

    @property
    def server(self) -> JSONDict:
        """The ``ping`` answer of this thread's connection (``version``, ``protocol``)."""
        return dict(self._connection().server)

    def _open(self, track: bool = True) -> _Connection:
        """Connects and checks the protocol version with ``ping``."""
        ct = self.connect_timeout
        conn = _Connection(self.socket_path, ct)
        try:
            rid = conn.take_id()
            conn.write(_encode({"id": rid, "cmd": "ping"}), ct)
            deadline = None if ct is None else time.monotonic() + ct
            resp = _parse_response(conn.read_line(deadline), rid)
            info = _result(resp)
        except PushlineError:
            conn.close()
            raise
        except _Closed:
            conn.close()
            raise ConnectionError(f"'{self.socket_path}' closed the connection during the version check") from None
        except socket.timeout:
            conn.close()
            raise ConnectionTimeout(f"no answer to ping from '{self.socket_path}' within {ct} s") from None
        except OSError as e:
            conn.close()
            raise ConnectionError(f"connection to '{self.socket_path}' failed: {e.strerror or e}") from None
        protocol = str(info.get("protocol", ""))
        if protocol.split(".")[0] != PROTOCOL_MAJOR:
            conn.close()
            raise ProtocolVersionError(
                f"the daemon at '{self.socket_path}' speaks protocol {protocol or '(none)'}, "
                f"this client speaks {PROTOCOL_MAJOR}.x: upgrade the client or the daemon",
                {"protocol": protocol, "version": info.get("version")})
        conn.server = info
        if track:
            with self._lock:
                self._connections.add(conn)
        return conn

    def _connection(self, fresh: bool = False) -> _Connection:
        conn: Optional[_Connection] = getattr(self._local, "conn", None)
        if conn is not None and (fresh or conn.is_stale()):
            if conn.pid == os.getpid():
                conn.close()
            conn = None
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn

    # -- requests ----------------------------------------------------------

    def _request(self, cmd: str, request: JSONDict, wrap: type, timeout: Any) -> Any:
        request["cmd"] = cmd
        t = self.timeout if timeout is DEFAULT else timeout
        return wrap(_result(self._roundtrip(request, t)))

    def _roundtrip(self, request: JSONDict, timeout: Optional[float] = None) -> JSONDict:
        cmd = request.get("cmd")
        retry_lost = cmd in IDEMPOTENT_COMMANDS
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt > 0)
            rid = conn.take_id()
            line = _encode({"id": rid, **request})
            try:
                conn.write(line, timeout)
            except socket.timeout:
                self._drop(conn)
                raise ConnectionTimeout(f"writing '{cmd}' to '{self.socket_path}' timed out after {timeout} s",
                                        request_sent=True) from None
            except OSError as e:
                # EPIPE/ECONNRESET: the daemon had gone; it read nothing of this request.
                self._drop(conn)
                if attempt == 0:
                    continue
                raise ConnectionError(f"cannot write to '{self.socket_path}': {e.strerror or e}") from None
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                return _parse_response(conn.read_line(deadline), rid)
            except socket.timeout:
                self._drop(conn)
                raise ConnectionTimeout(f"no response to '{cmd}' within {timeout} s "
                                        "(the daemon may still carry it out)", request_sent=True) from None
            except (_Closed, OSError) as e:
                self._drop(conn)
                if attempt == 0 and retry_lost:
                    continue
                reason = "closed the connection" if isinstance(e, _Closed) else f"failed: {e}"
                raise ConnectionError(f"'{self.socket_path}' {reason} before the response to '{cmd}' arrived "
                                      "(the daemon may have carried it out)", request_sent=True) from None
            except ConnectionError:
                self._drop(conn)
                raise
        raise ConnectionError(f"cannot reach '{self.socket_path}'")  # pragma: no cover - loop always returns/raises

    # -- commands (see _commands.Commands) -------------------------------

    def iter_devices(self, *, page_size: int = 1000, **filters: Any) -> Iterator[JSONDict]:
        """Yields every device matching the ``devices`` filters, fetching page after page.

        >>> for d in pl.iter_devices(user="42"):          # doctest: +SKIP
        ...     print(d["id"], d["platform"])
        """
        after = filters.pop("after", None)
        while True:
            page = self.devices(limit=page_size, after=after, **filters)
            yield from page.get("devices", [])
            after = page.get("next")
            if after is None:
                return

    def events(self, *, after: int = 0, limit: int = 1000, wait_ms: int = 30000, stop_when_idle: bool = False,
               reconnect: bool = True, reconnect_delay: float = 1.0) -> EventStream:
        """The ``events`` feed (protocol 1.2) as an iterator of :class:`~pushline.results.Event`
        from the cursor ``after`` (the ``seq`` of the last event you handled; 0 for the start),
        long-polling ``wait_ms`` at a time. See :class:`EventStream` for ``cursor`` and reconnecting.

        Long-polls hold this thread's connection while they wait: read the feed in a thread of its own.

        >>> for e in pl.events(after=cursor):                # doctest: +SKIP
        ...     handle(e); cursor = e.seq
        """
        return EventStream(self.events_page, after=after, limit=limit, wait_ms=wait_ms,
                           stop_when_idle=stop_when_idle, reconnect=reconnect, reconnect_delay=reconnect_delay)

    # -- pipelined bulk ----------------------------------------------------

    def bulk_send(self, targets: Iterable[Any], chunk: int = 10000, *, target: str = "ids",
                  platform: Optional[str] = None, app: Optional[str] = None, window: int = 4,
                  collect_results: bool = True, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                  busy_retries: int = 20, **notification: Any) -> BulkResult:
        """Sends one notification to a very large target list with pipelined ``bulk`` requests.

        ``targets`` is any iterable (a generator over a database cursor is fine) of
        registry ids (``target="ids"``), tokens (``target="registration_ids"``, with
        ``platform``) or user ids (``target="users"``). It is cut into requests of
        ``chunk`` targets (smaller when a request would exceed ``max_line_bytes``),
        written on one dedicated connection with up to ``window`` requests in
        flight, and the answers are merged into a :class:`BulkResult`.

        A request answered ``busy`` is re-sent after ``retry_after_ms``; a request that
        fails otherwise (e.g. ``provider_not_configured``: nothing was sent for it) is
        recorded in ``errors`` and the others go on. ``collect_results=False`` keeps
        only the counts (for millions of devices).

        >>> r = pl.bulk_send(range(1, 1_000_001), message="Sale!")   # doctest: +SKIP
        >>> r.sent, r.failed, [e.error.code for e in r.errors]       # doctest: +SKIP
        """
        if target not in ("ids", "registration_ids", "users"):
            raise ValueError("target must be 'ids', 'registration_ids' or 'users'")
        if isinstance(targets, (str, bytes, bytearray, int, Mapping)) or not isinstance(targets, Iterable):
            raise ArgumentTypeError("targets", f"expected an iterable of {target}, got {type(targets).__name__} "
                                               f"{targets!r:.40}")
        kind = {"ids": "id", "registration_ids": "token", "users": "user"}[target]
        if chunk < 1 or window < 1:
            raise ValueError("chunk and window must be at least 1")
        common = _args(platform=platform, app=app, **notification)

        def encode(items: List[Any]) -> List[Tuple[List[Any], bytes]]:
            body = {"cmd": "bulk", target: list_arg("targets", items, kind), **common}
            # The id is added when written: leave room for it.
            data = _encode(body)
            if len(data) + 32 > max_line_bytes and len(items) > 1:
                half = len(items) // 2
                return encode(items[:half]) + encode(items[half:])
            return [(items, data)]

        def requests() -> Iterator[Tuple[List[Any], bytes]]:
            batch: List[Any] = []
            for t in targets:
                batch.append(t)
                if len(batch) >= chunk:
                    yield from encode(batch)
                    batch = []
            if batch:
                yield from encode(batch)

        conn = self._open(track=False)
        try:
            return self._pipeline(conn, requests(), window, collect_results, busy_retries)
        finally:
            conn.close()

    def _pipeline(self, conn: _Connection, source: Iterator[Tuple[List[Any], bytes]], window: int,
                  collect_results: bool, busy_retries: int) -> BulkResult:
        sock = conn.sock
        assert sock is not None
        sock.setblocking(False)
        result = BulkResult()
        # (request id, chunk index, targets, body, busy attempts)
        inflight: Deque[Tuple[int, int, List[Any], bytes, int]] = collections.deque()
        retry: Deque[Tuple[float, int, List[Any], bytes, int]] = collections.deque()
        out = bytearray()
        inbuf = bytearray()
        scanned = 0
        exhausted = False
        index = 0
        last_progress = time.monotonic()
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                while len(inflight) < window:
                    if retry and retry[0][0] <= now:
                        _, idx, items, body, attempts = retry.popleft()
                    elif not exhausted:
                        try:
                            items, body = next(source)
                        except StopIteration:
                            exhausted = True
                            continue
                        idx, attempts = index, 0
                        index += 1
                    else:
                        break
                    rid = conn.take_id()
                    out += b'{"id":' + str(rid).encode() + b"," + body[1:]
                    inflight.append((rid, idx, items, body, attempts))
                    result.requests += 1
                if not inflight and not retry and exhausted and not out:
                    return result
                sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
                wait = 0.5
                if retry:
                    wait = max(0.0, min(wait, retry[0][0] - now))
                events = sel.select(wait)
                for _, mask in events:
                    if mask & selectors.EVENT_WRITE and out:
                        try:
                            n = sock.send(out)
                        except BlockingIOError:
                            n = 0
                        except OSError as e:
                            raise ConnectionError(f"bulk_send: writing to '{self.socket_path}' failed: {e}",
                                                  {"partial": result}, request_sent=True) from None
                        del out[:n]
                        last_progress = time.monotonic()
                    if mask & selectors.EVENT_READ:
                        try:
                            data = sock.recv(1 << 20)
                        except BlockingIOError:
                            data = None
                        except OSError as e:
                            raise ConnectionError(f"bulk_send: reading from '{self.socket_path}' failed: {e}",
                                                  {"partial": result}, request_sent=True) from None
                        if data == b"":
                            raise ConnectionError(f"bulk_send: '{self.socket_path}' closed the connection with "
                                                  f"{len(inflight)} requests unanswered", {"partial": result},
                                                  request_sent=True)
                        if data:
                            inbuf += data
                            last_progress = time.monotonic()
                while True:
                    i = inbuf.find(b"\n", scanned)
                    if i < 0:
                        scanned = len(inbuf)
                        break
                    line = bytes(inbuf[:i])
                    del inbuf[:i + 1]
                    scanned = 0
                    if not line.strip():
                        continue
                    if not inflight:
                        raise ConnectionError("bulk_send: the daemon sent a response nobody asked for")
                    rid, idx, items, body, attempts = inflight.popleft()
                    resp = _parse_response(line, rid)
                    try:
                        r = _result(resp)
                    except Busy as e:
                        if attempts < busy_retries:
                            delay = (e.retry_after_ms or 100) / 1000.0
                            retry.append((time.monotonic() + delay, idx, items, body, attempts + 1))
                        else:
                            result.errors.append(BulkChunkError(idx, items, e))
                        continue
                    except PushlineError as e:
                        result.errors.append(BulkChunkError(idx, items, e))
                        continue
                    result.sent += int(r.get("sent", 0))
                    result.failed += int(r.get("failed", 0))
                    if collect_results:
                        result.results.extend(r.get("results", []))
                if (self.timeout is not None and (inflight or out)
                        and time.monotonic() - last_progress > self.timeout):
                    raise ConnectionTimeout(f"bulk_send: no progress for {self.timeout} s", {"partial": result},
                                            request_sent=True)
        finally:
            sel.close()
