"""The protocol commands, shared by the blocking :class:`pushline.Client`, the asyncio
:class:`pushline.aio.AsyncClient` and :class:`pushline.testing.FakeClient`.

Each method checks its arguments, builds the request and hands it to ``self._request``
(which the blocking client answers with a value, the asyncio client with a coroutine).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .errors import ArgumentTypeError
from .results import (DeviceAnswer, DevicesPage, EventsPage, Job, JobAccepted, JobsPage, RegisterResult, Result,
                      SendResult, SubscribeResult)

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

#: Default of every method's ``timeout``: the client's own.
DEFAULT: Any = type("_Default", (), {"__repr__": lambda self: "DEFAULT", "__bool__": lambda self: False})()

_TARGET_LISTS = ("ids", "registration_ids", "users")


def _args(**kwargs: Any) -> JSONDict:
    """Drops arguments left at ``None`` or ``UNSET`` (absent in the request)."""
    return {k: v for k, v in kwargs.items() if v is not None and v is not UNSET}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def list_arg(name: str, value: Any, kind: str) -> Optional[List[Any]]:
    """Checks a list argument before anything is sent: a lone string, number or mapping
    where a list is expected is refused (``users="42"`` would otherwise reach users "4"
    and "2"). ``kind``: ``"id"`` (integers), ``"token"`` (strings), ``"user"`` (strings or
    integers, sent as strings), ``"object"`` (mappings).

    >>> list_arg("users", [42, "7"], "user")
    ['42', '7']
    >>> list_arg("users", "42", "user")
    Traceback (most recent call last):
    ...
    pushline.errors.ArgumentTypeError: invalid_argument: field 'users': expected a list of user ids, got the str '42' (write users=['42'])
    """
    if value is None:
        return None
    what = {"id": "registry ids", "token": "tokens", "user": "user ids", "object": "objects"}[kind]
    if isinstance(value, (str, bytes, bytearray, int, float, Mapping)) or not isinstance(value, Iterable):
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        hint = f" (write {name}=[{shown}])" if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        raise ArgumentTypeError(name, f"expected a list of {what}, got the {type(value).__name__} {shown}{hint}")
    out = list(value)
    for i, v in enumerate(out):
        ok = {"id": _is_int(v), "token": isinstance(v, str), "user": isinstance(v, str) or _is_int(v),
              "object": isinstance(v, Mapping)}[kind]
        if not ok:
            raise ArgumentTypeError(f"{name}[{i}]", f"expected {what[:-1]}, got {type(v).__name__} {v!r:.40}")
    if kind == "user":
        return [str(v) for v in out]
    if kind == "object":
        return [dict(v) for v in out]
    return out


def _scalar(name: str, value: Any, types: tuple, what: str) -> Any:
    if value is None or value is UNSET:
        return value
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        raise ArgumentTypeError(name, f"expected {what}, got {type(value).__name__} {value!r:.40}")
    return value


def _user(name: str, value: Any) -> Any:
    if value is None or value is UNSET:
        return value
    _scalar(name, value, (str, int), "a user id (string or integer)")
    return str(value)


def _filter(value: Any) -> Optional[JSONDict]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ArgumentTypeError("filter", f"expected a mapping such as {{'user': '42'}}, got {type(value).__name__}")
    f = dict(value)
    if not f:
        raise ArgumentTypeError("filter", "must name at least one of app, platform, user "
                                          "(filter={'all': True} sends to every device)")
    if "user" in f:
        f["user"] = _user("filter.user", f["user"])
    return f


def _message(i: int, m: Any) -> JSONDict:
    if not isinstance(m, Mapping):
        raise ArgumentTypeError(f"messages[{i}]", f"expected a mapping, got {type(m).__name__}")
    out = dict(m)
    for key, kind in (("ids", "id"), ("registration_ids", "token"), ("users", "user")):
        if key in out:
            out[key] = list_arg(f"messages[{i}].{key}", out[key], kind)
    if "filter" in out:
        try:
            out["filter"] = _filter(out["filter"])
        except ArgumentTypeError as e:
            raise ArgumentTypeError(f"messages[{i}].filter", e.message.split(": ", 1)[-1]) from None
    return out


def target(ids: Any, registration_ids: Any, users: Any, filter: Any, platform: Optional[str],
           app: Optional[str]) -> JSONDict:
    return _args(ids=list_arg("ids", ids, "id"), registration_ids=list_arg("registration_ids", registration_ids, "token"),
                 users=list_arg("users", users, "user"), filter=_filter(filter), platform=platform, app=app)


def time_arg(value: Union[int, float, str, _dt.datetime, _dt.date, None]) -> Union[int, str, None]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, _dt.date):
        return value.isoformat()
    return int(value)


def unix_seconds(name: str, value: Any) -> Optional[int]:
    """``send_at``: Unix seconds (int or float), or a ``datetime`` (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(name, f"expected Unix seconds or a datetime, got {type(value).__name__} {value!r:.40}")
    return int(value)


def async_args(async_: Optional[bool], send_at: Any, idempotency_key: Optional[str]) -> JSONDict:
    """The async members of ``send``/``bulk``/``topic`` (protocol 1.2); ``send_at`` and
    ``idempotency_key`` imply ``async``."""
    _scalar("async_", async_, (bool,), "True or False")
    _scalar("idempotency_key", idempotency_key, (str,), "a string")
    at = unix_seconds("send_at", send_at)
    if async_ is False and (at is not None or idempotency_key is not None):
        raise ArgumentTypeError("async_", "send_at and idempotency_key are for async requests (async_=True)")
    if at is not None or idempotency_key is not None:
        async_ = True
    out: JSONDict = {}
    if async_:
        out["async"] = True
    return {**out, **_args(send_at=at, idempotency_key=idempotency_key)}


def check_timeout(timeout: Any) -> Any:
    if timeout is DEFAULT or timeout is None:
        return timeout
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ArgumentTypeError("timeout", f"expected a positive number of seconds or None, got {timeout!r:.40}")
    return float(timeout)


class Commands:
    """One method per protocol command (protocol.md section 5). Every method takes
    ``timeout=`` (seconds, ``None`` to wait without limit; default: the client's)."""

    def _request(self, cmd: str, request: JSONDict, wrap: type, timeout: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def call(self, cmd: str, *, timeout: Any = DEFAULT, **arguments: Any) -> Any:
        """Sends any command; returns the response without ``id``/``ok``, or raises its error.

        The escape hatch for commands or arguments this client has no method for.

        >>> pl.call("devices", user="42", limit=10)       # doctest: +SKIP
        """
        return self._request(cmd, dict(arguments), Result, check_timeout(timeout))

    def ping(self, *, timeout: Any = DEFAULT) -> Any:
        """``ping``: ``{"version": "0.1.0", "protocol": "1.1"}``."""
        return self._request("ping", {}, Result, check_timeout(timeout))

    def register(self, *, platform: Optional[str] = None, registration_id: Optional[str] = None,
                 app: Optional[str] = None, name: Optional[str] = None, user: Union[str, int, None] = None,
                 device_id: Optional[str] = None, active: Optional[bool] = None,
                 p256dh: Optional[str] = None, auth: Optional[str] = None, browser: Optional[str] = None,
                 devices: Optional[Sequence[Mapping[str, Any]]] = None, timeout: Any = DEFAULT) -> Any:
        """``register``: one device from keyword arguments, or many with ``devices=[{...}, ...]``.

        Returns a :class:`~pushline.results.RegisterResult`: ``{"created": True, "updated": False,
        "device": {...}}`` for one device, ``{"created": n, "updated": m, "devices": [...]}`` for a
        batch (all or none).

        >>> pl.register(platform="fcm", registration_id=token, user=42)     # doctest: +SKIP
        """
        _scalar("registration_id", registration_id, (str,), "a token string")
        single = _args(platform=platform, registration_id=registration_id, app=app, name=name,
                       user=_user("user", user), device_id=device_id, active=active,
                       p256dh=p256dh, auth=auth, browser=browser)
        if devices is not None:
            if single:
                raise TypeError("register: pass either devices=[...] or one device's fields, not both")
            batch = list_arg("devices", devices, "object") or []
            for i, d in enumerate(batch):
                if "user" in d:
                    d["user"] = _user(f"devices[{i}].user", d["user"])
            return self._request("register", {"devices": batch}, RegisterResult, check_timeout(timeout))
        return self._request("register", single, RegisterResult, check_timeout(timeout))

    def unregister(self, *, device: Optional[int] = None, ids: Optional[Sequence[int]] = None,
                   registration_id: Optional[str] = None, registration_ids: Optional[Sequence[str]] = None,
                   platform: Optional[str] = None, app: Optional[str] = None, timeout: Any = DEFAULT) -> Any:
        """``unregister``: deletes devices; returns ``{"deleted": n, "not_found": [...]}``."""
        _scalar("device", device, (int,), "a registry id (integer)")
        _scalar("registration_id", registration_id, (str,), "a token string")
        return self._request("unregister", _args(
            device=device, ids=list_arg("ids", ids, "id"), registration_id=registration_id,
            registration_ids=list_arg("registration_ids", registration_ids, "token"), platform=platform, app=app),
            Result, check_timeout(timeout))

    def devices(self, *, app: Optional[str] = None, platform: Optional[str] = None,
                user: Union[str, int, None] = None, active: Optional[bool] = None,
                registration_id: Optional[str] = None, ids: Optional[Sequence[int]] = None,
                limit: Optional[int] = None, after: Optional[int] = None, timeout: Any = DEFAULT) -> Any:
        """``devices``: one page, ``{"devices": [...], "next": <after for the next page> or None}``."""
        return self._request("devices", _args(
            app=app, platform=platform, user=_user("user", user), active=active, registration_id=registration_id,
            ids=list_arg("ids", ids, "id"), limit=limit, after=after), DevicesPage, check_timeout(timeout))

    def update(self, *, device: Optional[int] = None, registration_id: Optional[str] = None,
               platform: Optional[str] = None, app: Optional[str] = None,
               name: Any = UNSET, user: Any = UNSET, device_id: Any = UNSET, active: Any = UNSET,
               new_registration_id: Optional[str] = None, p256dh: Optional[str] = None, auth: Optional[str] = None,
               timeout: Any = DEFAULT) -> Any:
        """``update``: changes a device named by ``device`` (registry id) or ``registration_id`` + ``platform``.

        Settable: ``name``, ``user``, ``device_id`` (``None`` clears), ``active``, and (protocol 1.1)
        ``new_registration_id`` (a rotated token: the id and topic subscriptions stay), ``p256dh``,
        ``auth``. Returns ``{"device": {...}}``.
        """
        _scalar("device", device, (int,), "a registry id (integer)")
        request = _args(device=device, registration_id=registration_id, platform=platform, app=app,
                        new_registration_id=new_registration_id, p256dh=p256dh, auth=auth)
        for key, value in (("name", name), ("user", user), ("device_id", device_id), ("active", active)):
            if value is not UNSET:
                request[key] = _user("user", value) if key == "user" and value is not None else value
        return self._request("update", request, DeviceAnswer, check_timeout(timeout))

    def prune(self, *, inactive_before: Union[int, float, str, _dt.datetime, _dt.date, None] = None,
              timeout: Any = DEFAULT) -> Any:
        """``prune``: deletes inactive devices (optionally only those inactive before a time); ``{"deleted": n}``."""
        return self._request("prune", _args(inactive_before=time_arg(inactive_before)), Result, check_timeout(timeout))

    def stats(self, *, timeout: Any = DEFAULT) -> Any:
        """``stats``: device counts by app/platform, uptime, connections, pending, notifications."""
        return self._request("stats", {}, Result, check_timeout(timeout))

    def send(self, *, ids: Optional[Sequence[int]] = None, registration_ids: Optional[Sequence[str]] = None,
             users: Optional[Iterable[Any]] = None, filter: Optional[Mapping[str, Any]] = None,
             platform: Optional[str] = None, app: Optional[str] = None, results: Optional[str] = None,
             async_: Optional[bool] = None, send_at: Any = None, idempotency_key: Optional[str] = None,
             timeout: Any = DEFAULT, **notification: Any) -> Any:
        """``send``: one notification (protocol.md section 6 fields as keywords) to one target.

        Returns a :class:`~pushline.results.SendResult` ``{"sent": n, "failed": m, "results": [...]}``;
        per-device failures are entries with ``"status": "failed"``, not exceptions.
        ``results="failed"`` or ``"none"`` (protocol 1.1) leaves the successes out of ``results``.

        With ``async_=True`` (protocol 1.2) the daemon answers once the job is durably queued:
        a :class:`~pushline.results.JobAccepted` (``job_id``, ``state``, ``duplicate``). ``send_at``
        (Unix seconds or a ``datetime``) delays delivery; ``idempotency_key`` (at most 255 bytes,
        per app) makes a repeated request return the first job. Both imply ``async_=True``.

        >>> pl.send(users=["42"], message="Your order shipped", badge=1, extra={"order": 981})  # doctest: +SKIP
        """
        request = target(ids, registration_ids, users, filter, platform, app)
        request.update(_args(results=results, **notification))
        extra = async_args(async_, send_at, idempotency_key)
        request.update(extra)
        return self._request("send", request, JobAccepted if extra else SendResult, check_timeout(timeout))

    def bulk(self, *, ids: Optional[Sequence[int]] = None, registration_ids: Optional[Sequence[str]] = None,
             users: Optional[Iterable[Any]] = None, filter: Optional[Mapping[str, Any]] = None,
             platform: Optional[str] = None, app: Optional[str] = None,
             messages: Optional[Sequence[Mapping[str, Any]]] = None, results: Optional[str] = None,
             async_: Optional[bool] = None, send_at: Any = None, idempotency_key: Optional[str] = None,
             timeout: Any = DEFAULT, **notification: Any) -> Any:
        """``bulk``: ``send`` for large target lists, or ``messages=[{target + notification}, ...]``.
        ``async_``, ``send_at``, ``idempotency_key`` as for :meth:`send`."""
        request = target(ids, registration_ids, users, filter, platform, app)
        if messages is not None:
            if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
                raise ArgumentTypeError("messages", f"expected a list of message mappings, got {type(messages).__name__}")
            request["messages"] = [_message(i, m) for i, m in enumerate(messages)]
        request.update(_args(results=results, **notification))
        extra = async_args(async_, send_at, idempotency_key)
        request.update(extra)
        return self._request("bulk", request, JobAccepted if extra else SendResult, check_timeout(timeout))

    def topic(self, *, topic: Optional[str] = None, condition: Optional[str] = None, app: Optional[str] = None,
              async_: Optional[bool] = None, send_at: Any = None, idempotency_key: Optional[str] = None,
              timeout: Any = DEFAULT, **notification: Any) -> Any:
        """``topic``: sends to an FCM topic (``topic="news"``) or ``condition``.
        ``async_``, ``send_at``, ``idempotency_key`` as for :meth:`send`."""
        extra = async_args(async_, send_at, idempotency_key)
        return self._request("topic", {**_args(topic=topic, condition=condition, app=app), **_args(**notification),
                                       **extra},
                             JobAccepted if extra else SendResult, check_timeout(timeout))

    # -- async jobs and the events feed (protocol 1.2) ----------------------

    def job(self, job: str, *, results: Optional[bool] = None, after: Any = None, limit: Optional[int] = None,
            timeout: Any = DEFAULT) -> Any:
        """``job``: a :class:`~pushline.results.Job` (``state``, counts ``devices``, ``sent``, ``failed``,
        ``pending``, ``canceled``, times); ``results=True`` adds per-device results, paged with
        ``after``/``limit`` (at most 1000) and ``next``.

        >>> pl.job(accepted.job_id).state                   # doctest: +SKIP
        'done'
        """
        _scalar("job", job, (str,), "a job id (string)")
        return self._request("job", _args(job=job, results=results, after=after, limit=limit), Job,
                             check_timeout(timeout))

    def jobs(self, *, state: Optional[str] = None, app: Optional[str] = None, after: Any = None,
             limit: Optional[int] = None, timeout: Any = DEFAULT) -> Any:
        """``jobs``: a :class:`~pushline.results.JobsPage` of jobs (filter by ``state``, ``app``), with ``next``."""
        return self._request("jobs", _args(state=state, app=app, after=after, limit=limit), JobsPage,
                             check_timeout(timeout))

    def cancel(self, job: str, *, timeout: Any = DEFAULT) -> Any:
        """``cancel``: devices of the job not yet sent become ``canceled``; returns the :class:`~pushline.results.Job`."""
        _scalar("job", job, (str,), "a job id (string)")
        return self._request("cancel", {"job": job}, Job, check_timeout(timeout))

    def events_page(self, *, after: Optional[int] = None, limit: Optional[int] = None, wait_ms: Optional[int] = None,
                    timeout: Any = DEFAULT) -> Any:
        """``events``: one page of the feed after the cursor ``after``, waiting up to ``wait_ms``
        (at most 60000) when nothing is newer. An :class:`~pushline.results.EventsPage` (``events``,
        ``next``). The client's ``events()`` iterator is built on it.

        When ``timeout`` is the client's default, the call waits at least ``wait_ms`` plus 15 s.
        """
        _scalar("after", after, (int,), "a seq (integer)")
        _scalar("limit", limit, (int,), "an integer (1-1000)")
        _scalar("wait_ms", wait_ms, (int,), "milliseconds (integer, 0-60000)")
        t = check_timeout(timeout)
        if t is DEFAULT and wait_ms:
            own = getattr(self, "timeout", None)
            t = None if own is None else max(float(own), wait_ms / 1000.0 + 15.0)
        return self._request("events", _args(after=after, limit=limit, wait_ms=wait_ms), EventsPage, t)

    def subscribe(self, *, topic: str, app: Optional[str] = None, ids: Optional[Sequence[int]] = None,
                  registration_ids: Optional[Sequence[str]] = None, users: Optional[Iterable[Any]] = None,
                  filter: Optional[Mapping[str, Any]] = None, platform: Optional[str] = None,
                  timeout: Any = DEFAULT) -> Any:
        """``subscribe``: adds FCM devices chosen by a target to a topic; ``{"succeeded", "failed", "results"}``."""
        return self._request("subscribe", {"topic": topic, **target(ids, registration_ids, users, filter, platform, app)},
                             SubscribeResult, check_timeout(timeout))

    def unsubscribe(self, *, topic: str, app: Optional[str] = None, ids: Optional[Sequence[int]] = None,
                    registration_ids: Optional[Sequence[str]] = None, users: Optional[Iterable[Any]] = None,
                    filter: Optional[Mapping[str, Any]] = None, platform: Optional[str] = None,
                    timeout: Any = DEFAULT) -> Any:
        """``unsubscribe``: removes FCM devices chosen by a target from a topic."""
        return self._request("unsubscribe", {"topic": topic, **target(ids, registration_ids, users, filter, platform, app)},
                             SubscribeResult, check_timeout(timeout))

    def topics(self, *, ids: Optional[Sequence[int]] = None, registration_ids: Optional[Sequence[str]] = None,
               users: Optional[Iterable[Any]] = None, filter: Optional[Mapping[str, Any]] = None,
               platform: Optional[str] = None, app: Optional[str] = None, timeout: Any = DEFAULT) -> Any:
        """``topics``: ``{"devices": [{"id": 21, "topics": ["news"]}, ...]}`` for the devices of a target."""
        return self._request("topics", target(ids, registration_ids, users, filter, platform, app), Result,
                             check_timeout(timeout))

    def subscribers(self, *, topic: str, app: Optional[str] = None, timeout: Any = DEFAULT) -> Any:
        """``subscribers``: ``{"devices": [...]}`` recorded in a topic."""
        return self._request("subscribers", _args(topic=topic, app=app), DevicesPage, check_timeout(timeout))
