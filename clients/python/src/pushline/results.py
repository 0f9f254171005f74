"""Typed results: the daemon's answers as dicts that also have typed attributes.

Every result is a ``dict`` subclass holding exactly what the daemon sent (so code
written for the plain dicts of earlier versions, ``json.dumps`` and ``==`` keep
working) with attributes for the documented members:

>>> r = SendResult({"sent": 1, "failed": 1, "results": [
...     {"id": 17, "status": "sent"},
...     {"id": 21, "status": "failed", "reason": "UNREGISTERED", "reason_class": "invalid_token"}]})
>>> r.sent, r.failed, r["sent"]
(1, 1, 1)
>>> [(x.id, x.reason_class) for x in r.failures]
[(21, 'invalid_token')]
>>> isinstance(r, dict) and isinstance(r.results[0], dict)
True
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

__all__ = ["Device", "DeviceResult", "SendResult", "SubscribeResult", "RegisterResult", "DevicesPage", "Result",
           "JobAccepted", "Job", "JobsPage", "Event", "EventsPage"]


class Result(dict):  # type: ignore[type-arg]
    """Base of the typed results: a dict of the daemon's answer (without ``id``/``ok``)."""

    def to_dict(self) -> Dict[str, Any]:
        """A plain ``dict`` copy (nested results stay typed dicts)."""
        return dict(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class Device(Result):
    """A registry device (protocol.md section 5.2)."""

    @property
    def id(self) -> int:
        return int(self["id"])

    @property
    def platform(self) -> str:
        return str(self["platform"])

    @property
    def app(self) -> str:
        return str(self.get("app", "default"))

    @property
    def registration_id(self) -> str:
        return str(self["registration_id"])

    @property
    def name(self) -> Optional[str]:
        return self.get("name")

    @property
    def user(self) -> Optional[str]:
        return self.get("user")

    @property
    def device_id(self) -> Optional[str]:
        return self.get("device_id")

    @property
    def active(self) -> bool:
        return bool(self.get("active", True))

    @property
    def inactive_reason(self) -> Optional[str]:
        return self.get("inactive_reason")


class DeviceResult(Result):
    """One device's outcome in ``send``/``bulk``/``topic``/``subscribe`` (protocol.md section 4).

    ``id``, ``platform``, ``app`` and ``registration_id`` may be ``None`` (a token or id that
    is not registered); ``reason``, ``reason_class``, ``retryable`` and ``deactivated`` are set
    on failures only.
    """

    @property
    def id(self) -> Optional[int]:
        return self.get("id")

    @property
    def platform(self) -> Optional[str]:
        return self.get("platform")

    @property
    def app(self) -> Optional[str]:
        return self.get("app")

    @property
    def registration_id(self) -> Optional[str]:
        return self.get("registration_id")

    @property
    def status(self) -> str:
        return str(self.get("status", ""))

    @property
    def ok(self) -> bool:
        """True when the device was sent to (or subscribed/unsubscribed)."""
        return self.status != "failed"

    @property
    def reason(self) -> Optional[str]:
        return self.get("reason")

    @property
    def reason_class(self) -> Optional[str]:
        """``invalid_token``, ``not_registered``, ``rate_limited``, ``provider_error``, ``transport``,
        ``auth``, ``bad_request``, ``configuration`` or ``unknown`` (daemons before protocol 1.1: None)."""
        return self.get("reason_class")

    @property
    def retryable(self) -> bool:
        return bool(self.get("retryable", False))

    @property
    def deactivated(self) -> bool:
        return bool(self.get("deactivated", False))

    @property
    def message_index(self) -> Optional[int]:
        """``bulk`` with ``messages``: the index of the message this result belongs to."""
        v = self.get("message_index", self.get("message"))
        return v if isinstance(v, int) and not isinstance(v, bool) else None


def _wrap_list(items: Any, cls: type) -> List[Any]:
    if not isinstance(items, list):
        return []
    for i, x in enumerate(items):
        if isinstance(x, dict) and not isinstance(x, cls):
            items[i] = cls(x)
    return items


class SendResult(Result):
    """The answer to ``send``, ``bulk`` and ``topic``: counts and one :class:`DeviceResult` per device."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "results" in self:
            _wrap_list(self["results"], DeviceResult)

    @property
    def sent(self) -> int:
        return int(self.get("sent", 0))

    @property
    def failed(self) -> int:
        return int(self.get("failed", 0))

    @property
    def results(self) -> List[DeviceResult]:
        return self.get("results", [])

    @property
    def failures(self) -> List[DeviceResult]:
        """The failed entries (all of them with ``results="failed"``)."""
        return [r for r in self.results if not r.ok]

    @property
    def successes(self) -> List[DeviceResult]:
        return [r for r in self.results if r.ok]


class SubscribeResult(SendResult):
    """The answer to ``subscribe``/``unsubscribe``: ``succeeded``, ``failed`` and per-device results."""

    @property
    def succeeded(self) -> int:
        return int(self.get("succeeded", 0))

    @property
    def sent(self) -> int:
        return self.succeeded


class RegisterResult(Result):
    """The answer to ``register``: one ``device`` (``created``/``updated`` booleans) or a batch's
    ``devices`` (``created``/``updated`` counts)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.get("device"), dict):
            self["device"] = Device(self["device"])
        if "devices" in self:
            _wrap_list(self["devices"], Device)

    @property
    def created(self) -> Union[bool, int]:
        return self.get("created", False)

    @property
    def updated(self) -> Union[bool, int]:
        return self.get("updated", False)

    @property
    def device(self) -> Optional[Device]:
        return self.get("device")

    @property
    def devices(self) -> List[Device]:
        d = self.get("device")
        return self.get("devices", [d] if d is not None else [])


class DevicesPage(Result):
    """The answer to ``devices``: one page and the ``next`` cursor (None on the last page)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _wrap_list(self.get("devices"), Device)

    @property
    def devices(self) -> List[Device]:
        return self.get("devices", [])

    @property
    def next(self) -> Optional[int]:
        return self.get("next")


class DeviceAnswer(Result):
    """The answer to ``update``: ``device``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.get("device"), dict):
            self["device"] = Device(self["device"])

    @property
    def device(self) -> Device:
        return self["device"]


class JobAccepted(Result):
    """The answer to an async ``send``/``bulk``/``topic`` (protocol 1.2): the job is durably queued.

    >>> r = JobAccepted({"job": {"id": "j1", "state": "queued"}})
    >>> r.job_id, r.state, r.duplicate
    ('j1', 'queued', False)
    """

    @property
    def job(self) -> Dict[str, Any]:
        j = self.get("job")
        return j if isinstance(j, dict) else {}

    @property
    def job_id(self) -> str:
        return str(self.job.get("id"))

    @property
    def state(self) -> Optional[str]:
        return self.job.get("state")

    @property
    def duplicate(self) -> bool:
        """True when an earlier request with the same ``idempotency_key`` made this job (nothing new was queued)."""
        return bool(self.get("duplicate", False))


def _job_fields(r: Dict[str, Any]) -> Dict[str, Any]:
    j = r.get("job")
    return j if isinstance(j, dict) else r


class Job(Result):
    """The answer to ``job`` and ``cancel`` (protocol 1.2): state, counts and times; with
    ``results=True`` also per-device ``results`` (as ``send``'s) and ``next``. The job's members are
    read at the top level or under ``job``, whichever the daemon sends.

    >>> j = Job({"id": "j1", "state": "done", "devices": 3, "sent": 2, "failed": 1, "pending": 0, "canceled": 0})
    >>> j.id, j.state, j.done, (j.sent, j.failed, j.pending)
    ('j1', 'done', True, (2, 1, 0))
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _wrap_list(self.get("results"), DeviceResult)

    def _f(self, key: str, default: Any = None) -> Any:
        return _job_fields(self).get(key, default)

    @property
    def id(self) -> Optional[str]:
        v = self._f("id")
        return None if v is None else str(v)

    @property
    def state(self) -> Optional[str]:
        return self._f("state")

    @property
    def done(self) -> bool:
        """The job is over (``done`` or ``canceled``)."""
        return self.state in ("done", "canceled")

    @property
    def devices(self) -> int:
        return int(self._f("devices", 0) or 0)

    @property
    def sent(self) -> int:
        return int(self._f("sent", 0) or 0)

    @property
    def failed(self) -> int:
        return int(self._f("failed", 0) or 0)

    @property
    def pending(self) -> int:
        return int(self._f("pending", 0) or 0)

    @property
    def canceled(self) -> int:
        return int(self._f("canceled", 0) or 0)

    @property
    def results(self) -> List[DeviceResult]:
        return self.get("results", [])

    @property
    def next(self) -> Any:
        return self.get("next")


class JobsPage(Result):
    """The answer to ``jobs``: ``jobs`` (each a :class:`Job`) and the ``next`` cursor (None on the last page)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _wrap_list(self.get("jobs"), Job)

    @property
    def jobs(self) -> List[Job]:
        return self.get("jobs", [])

    @property
    def next(self) -> Any:
        return self.get("next")


class Event(Result):
    """One entry of the ``events`` feed (protocol 1.2): ``seq``, ``type``, ``at`` and the type's members.

    >>> e = Event({"seq": 4, "type": "device_deactivated", "at": "2026-12-05T04:46:31.123Z", "device": 17,
    ...            "app": "default", "platform": "apns", "registration_id": "4f1c", "reason": "Unregistered"})
    >>> e.seq, e.type, e.device, e.reason
    (4, 'device_deactivated', 17, 'Unregistered')
    """

    @property
    def seq(self) -> int:
        return int(self["seq"])

    @property
    def type(self) -> str:
        return str(self["type"])

    @property
    def at(self) -> str:
        """When it happened: RFC 3339 UTC text."""
        return str(self["at"])

    @property
    def device(self) -> Optional[int]:
        return self.get("device")

    @property
    def app(self) -> Optional[str]:
        return self.get("app")

    @property
    def platform(self) -> Optional[str]:
        return self.get("platform")

    @property
    def registration_id(self) -> Optional[str]:
        return self.get("registration_id")

    @property
    def reason(self) -> Optional[str]:
        return self.get("reason")

    @property
    def job(self) -> Optional[str]:
        return self.get("job")


class EventsPage(Result):
    """The answer to ``events``: ``events`` (each an :class:`Event`) and ``next``, the cursor to pass as ``after``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _wrap_list(self.get("events"), Event)

    @property
    def events(self) -> List[Event]:
        return self.get("events", [])

    @property
    def next(self) -> int:
        return int(self.get("next", 0))
