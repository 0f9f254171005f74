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

from .errors import (Busy, ConnectionError, ConnectionTimeout, PushlineError,
                     ProtocolVersionError, error_from_response)

__all__ = ["Client", "BulkResult", "BulkChunkError", "UNSET", "PROTOCOL_MAJOR", "DEFAULT_SOCKET"]

#: The protocol major version this client speaks.
PROTOCOL_MAJOR = "1"
#: The daemon's default socket path, used when neither an argument nor ``PUSHLINE_SOCKET`` names one.
DEFAULT_SOCKET = "./var/pushline.sock"
#: The daemon's default ``max_line_bytes``.
DEFAULT_MAX_LINE_BYTES = 1 << 20

#: Commands that read only (or set absolute values): re-sent once on a new
#: connection when the connection broke after the request was written.
IDEMPOTENT_COMMANDS = frozenset({"ping", "devices", "stats", "topics", "subscribers", "update"})

JSONDict = Dict[str, Any]


class _Unset:
    """Marker for "argument not given" where ``None`` means JSON ``null`` (``update``)."""

    _instance: Optional["_Unset"] = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: Default of ``update``'s settable fields: leave the field unchanged (``None`` clears it).
UNSET: Any = _Unset()


class _Closed(Exception):
    """The daemon closed the connection (EOF) while a response was awaited."""


def _encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _args(**kwargs: Any) -> JSONDict:
    """Drops arguments left at ``None`` or ``UNSET`` (absent in the request)."""
    return {k: v for k, v in kwargs.items() if v is not None and v is not UNSET}


def _users(users: Optional[Iterable[Any]]) -> Optional[List[str]]:
    return None if users is None else [str(u) for u in users]


def _time_arg(value: Union[int, float, str, _dt.datetime, _dt.date, None]) -> Union[int, str, None]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, _dt.date):
        return value.isoformat()
    return int(value)


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

    def write(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            raise BrokenPipeError("connection closed")
        sock.settimeout(self.timeout)
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


class Client:
    """A client for the Pushline daemon.

    ``socket_path`` defaults to the ``PUSHLINE_SOCKET`` environment variable,
    then ``./var/pushline.sock``. ``timeout`` (seconds, ``None`` for none)
    bounds connecting and each request's round trip.

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

    def __init__(self, socket_path: Optional[str] = None, timeout: Optional[float] = 10.0) -> None:
        self.socket_path: str = socket_path or os.environ.get("PUSHLINE_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
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
        conn = _Connection(self.socket_path, self.timeout)
        try:
            rid = conn.take_id()
            conn.write(_encode({"id": rid, "cmd": "ping"}))
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
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
            raise ConnectionTimeout(f"no answer to ping from '{self.socket_path}' within {self.timeout} s") from None
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

    def call(self, cmd: str, **arguments: Any) -> JSONDict:
        """Sends any command; returns the response without ``id``/``ok``, or raises its error.

        The escape hatch for commands or arguments this client has no method for.

        >>> pl.call("devices", user="42", limit=10)       # doctest: +SKIP
        """
        request = dict(arguments)
        request["cmd"] = cmd
        return _result(self._roundtrip(request))

    def _roundtrip(self, request: JSONDict) -> JSONDict:
        cmd = request.get("cmd")
        retry_lost = cmd in IDEMPOTENT_COMMANDS
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt > 0)
            rid = conn.take_id()
            line = _encode({"id": rid, **request})
            try:
                conn.write(line)
            except socket.timeout:
                self._drop(conn)
                raise ConnectionTimeout(f"writing '{cmd}' to '{self.socket_path}' timed out after {self.timeout} s",
                                        request_sent=True) from None
            except OSError as e:
                # EPIPE/ECONNRESET: the daemon had gone; it read nothing of this request.
                self._drop(conn)
                if attempt == 0:
                    continue
                raise ConnectionError(f"cannot write to '{self.socket_path}': {e.strerror or e}") from None
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            try:
                return _parse_response(conn.read_line(deadline), rid)
            except socket.timeout:
                self._drop(conn)
                raise ConnectionTimeout(f"no response to '{cmd}' within {self.timeout} s "
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

    # -- commands ----------------------------------------------------------

    def ping(self) -> JSONDict:
        """``ping``: ``{"version": "0.1.0", "protocol": "1.0"}``."""
        return self.call("ping")

    def register(self, *, platform: Optional[str] = None, registration_id: Optional[str] = None,
                 app: Optional[str] = None, name: Optional[str] = None, user: Union[str, int, None] = None,
                 device_id: Optional[str] = None, active: Optional[bool] = None,
                 p256dh: Optional[str] = None, auth: Optional[str] = None, browser: Optional[str] = None,
                 devices: Optional[Sequence[Mapping[str, Any]]] = None) -> JSONDict:
        """``register``: one device from keyword arguments, or many with ``devices=[{...}, ...]``.

        Returns ``{"created": True, "updated": False, "device": {...}}`` for one device,
        ``{"created": n, "updated": m, "devices": [...]}`` for a batch (all or none).

        >>> pl.register(platform="fcm", registration_id=token, user=42)     # doctest: +SKIP
        """
        single = _args(platform=platform, registration_id=registration_id, app=app, name=name,
                       user=None if user is None else str(user), device_id=device_id, active=active,
                       p256dh=p256dh, auth=auth, browser=browser)
        if devices is not None:
            if single:
                raise TypeError("register: pass either devices=[...] or one device's fields, not both")
            return self.call("register", devices=[dict(d) for d in devices])
        return self.call("register", **single)

    def unregister(self, *, device: Optional[int] = None, ids: Optional[Sequence[int]] = None,
                   registration_id: Optional[str] = None, registration_ids: Optional[Sequence[str]] = None,
                   platform: Optional[str] = None, app: Optional[str] = None) -> JSONDict:
        """``unregister``: deletes devices; returns ``{"deleted": n, "not_found": [...]}``."""
        return self.call("unregister", **_args(device=device, ids=None if ids is None else list(ids),
                                               registration_id=registration_id,
                                               registration_ids=None if registration_ids is None else list(registration_ids),
                                               platform=platform, app=app))

    def devices(self, *, app: Optional[str] = None, platform: Optional[str] = None,
                user: Union[str, int, None] = None, active: Optional[bool] = None,
                registration_id: Optional[str] = None, ids: Optional[Sequence[int]] = None,
                limit: Optional[int] = None, after: Optional[int] = None) -> JSONDict:
        """``devices``: one page, ``{"devices": [...], "next": <after for the next page> or None}``."""
        return self.call("devices", **_args(app=app, platform=platform, user=None if user is None else str(user),
                                            active=active, registration_id=registration_id,
                                            ids=None if ids is None else list(ids), limit=limit, after=after))

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

    def update(self, *, device: Optional[int] = None, registration_id: Optional[str] = None,
               platform: Optional[str] = None, app: Optional[str] = None,
               name: Any = UNSET, user: Any = UNSET, device_id: Any = UNSET, active: Any = UNSET) -> JSONDict:
        """``update``: changes a device named by ``device`` (registry id) or ``registration_id`` + ``platform``.

        Settable: ``name``, ``user``, ``device_id`` (``None`` clears), ``active``. Returns ``{"device": {...}}``.
        """
        request = _args(device=device, registration_id=registration_id, platform=platform, app=app)
        for key, value in (("name", name), ("user", user), ("device_id", device_id), ("active", active)):
            if value is not UNSET:
                request[key] = str(value) if key == "user" and isinstance(value, int) and not isinstance(value, bool) else value
        return self.call("update", **request)

    def prune(self, *, inactive_before: Union[int, float, str, _dt.datetime, _dt.date, None] = None) -> JSONDict:
        """``prune``: deletes inactive devices (optionally only those inactive before a time); ``{"deleted": n}``."""
        return self.call("prune", **_args(inactive_before=_time_arg(inactive_before)))

    def stats(self) -> JSONDict:
        """``stats``: device counts by app/platform, uptime, connections, pending, notifications."""
        return self.call("stats")

    @staticmethod
    def _target(ids: Optional[Sequence[int]], registration_ids: Optional[Sequence[str]],
                users: Optional[Iterable[Any]], filter: Optional[Mapping[str, Any]],
                platform: Optional[str], app: Optional[str]) -> JSONDict:
        return _args(ids=None if ids is None else list(ids),
                     registration_ids=None if registration_ids is None else list(registration_ids),
                     users=_users(users), filter=None if filter is None else dict(filter),
                     platform=platform, app=app)

    def send(self, *, ids: Optional[Sequence[int]] = None, registration_ids: Optional[Sequence[str]] = None,
             users: Optional[Iterable[Any]] = None, filter: Optional[Mapping[str, Any]] = None,
             platform: Optional[str] = None, app: Optional[str] = None, **notification: Any) -> JSONDict:
        """``send``: one notification (protocol.md section 6 fields as keywords) to one target.

        Returns ``{"sent": n, "failed": m, "results": [...]}``; per-device failures are
        entries with ``"status": "failed"``, not exceptions.

        >>> pl.send(users=["42"], message="Your order shipped", badge=1, extra={"order": 981})  # doctest: +SKIP
        """
        return self.call("send", **self._target(ids, registration_ids, users, filter, platform, app),
                         **_args(**notification))

    def bulk(self, *, ids: Optional[Sequence[int]] = None, registration_ids: Optional[Sequence[str]] = None,
             users: Optional[Iterable[Any]] = None, filter: Optional[Mapping[str, Any]] = None,
             platform: Optional[str] = None, app: Optional[str] = None,
             messages: Optional[Sequence[Mapping[str, Any]]] = None, **notification: Any) -> JSONDict:
        """``bulk``: ``send`` for large target lists, or ``messages=[{target + notification}, ...]``."""
        request = self._target(ids, registration_ids, users, filter, platform, app)
        if messages is not None:
            request["messages"] = [dict(m) for m in messages]
        return self.call("bulk", **request, **_args(**notification))

    def topic(self, *, topic: Optional[str] = None, condition: Optional[str] = None, app: Optional[str] = None,
              **notification: Any) -> JSONDict:
        """``topic``: sends to an FCM topic (``topic="news"``) or ``condition``."""
        return self.call("topic", **_args(topic=topic, condition=condition, app=app), **_args(**notification))

    def subscribe(self, *, topic: str, app: Optional[str] = None, ids: Optional[Sequence[int]] = None,
                  registration_ids: Optional[Sequence[str]] = None, users: Optional[Iterable[Any]] = None,
                  filter: Optional[Mapping[str, Any]] = None, platform: Optional[str] = None) -> JSONDict:
        """``subscribe``: adds FCM devices chosen by a target to a topic; ``{"succeeded", "failed", "results"}``."""
        return self.call("subscribe", topic=topic, **self._target(ids, registration_ids, users, filter, platform, app))

    def unsubscribe(self, *, topic: str, app: Optional[str] = None, ids: Optional[Sequence[int]] = None,
                    registration_ids: Optional[Sequence[str]] = None, users: Optional[Iterable[Any]] = None,
                    filter: Optional[Mapping[str, Any]] = None, platform: Optional[str] = None) -> JSONDict:
        """``unsubscribe``: removes FCM devices chosen by a target from a topic."""
        return self.call("unsubscribe", topic=topic, **self._target(ids, registration_ids, users, filter, platform, app))

    def topics(self, *, ids: Optional[Sequence[int]] = None, registration_ids: Optional[Sequence[str]] = None,
               users: Optional[Iterable[Any]] = None, filter: Optional[Mapping[str, Any]] = None,
               platform: Optional[str] = None, app: Optional[str] = None) -> JSONDict:
        """``topics``: ``{"devices": [{"id": 21, "topics": ["news"]}, ...]}`` for the devices of a target."""
        return self.call("topics", **self._target(ids, registration_ids, users, filter, platform, app))

    def subscribers(self, *, topic: str, app: Optional[str] = None) -> JSONDict:
        """``subscribers``: ``{"devices": [...]}`` recorded in a topic."""
        return self.call("subscribers", **_args(topic=topic, app=app))

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
        if chunk < 1 or window < 1:
            raise ValueError("chunk and window must be at least 1")
        common = _args(platform=platform, app=app, **notification)

        def encode(items: List[Any]) -> List[Tuple[List[Any], bytes]]:
            body = {"cmd": "bulk", target: [str(t) for t in items] if target == "users" else items, **common}
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
