"""A fake Pushline client for your application's own tests: no daemon, no socket.

:class:`FakeClient` has every method of :class:`pushline.Client` (the same argument
checks, the same typed results and exceptions) over an in-memory registry, and
records what was sent:

>>> from pushline.testing import FakeClient
>>> pl = FakeClient()
>>> _ = pl.register(platform="fcm", registration_id="tok-1", user=42)
>>> r = pl.send(users=["42"], title="Hi", message="Your order shipped")
>>> r.sent, pl.outbox[0]["message"], pl.outbox[0].registration_ids
(1, 'Your order shipped', ['tok-1'])

Async sends (``async_``, ``send_at``, ``idempotency_key``; protocol 1.2) are delivered at once
and their job is ``done``, except a ``send_at`` in the future: that job stays ``scheduled`` until
:meth:`FakeClient.run_scheduled` (or ``cancel``). ``job``, ``jobs``, ``cancel`` and the ``events``
feed (``device_deactivated``, ``job_done``, ``job_canceled``) work from memory; ``events()``
stops when no event is left (nothing can happen while a fake waits).

Make devices fail as a provider would with ``fail={token: reason}`` (``"Unregistered"``,
``"BadDeviceToken"``, ``"UNREGISTERED"``... deactivate the device like the daemon does;
``"TooManyRequests"`` is a retryable failure), and raise an error for the next calls with
``fail_next(pushline.Busy(...))``. Apps: ``apps={"default": ["apns", "fcm"]}`` names the
configured apps and the platforms that have credentials (default: app ``default`` with
every platform).

In Django, point your client factory at a FakeClient in tests (``mock.patch``), or
construct your code with one.
"""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import time as _time

from ._commands import DEFAULT, Commands
from .errors import (DuplicateRegistration, InvalidArgument, NotFound, ProviderNotConfigured, PushlineError,
                     UnknownCommand)
from .results import Result
from .client import EventStream

__all__ = ["FakeClient", "SentNotification"]

PLATFORMS = ("apns", "fcm", "webpush", "wns")
#: Reasons that make the fake deactivate the device, as the daemon does.
DEACTIVATING = {"Unregistered", "BadDeviceToken", "ExpiredToken", "DeviceTokenNotForTopic", "UNREGISTERED",
                "SENDER_ID_MISMATCH", "NOT_FOUND", "gone", "not_found", "channel_expired"}
RETRYABLE = {"TooManyRequests", "ServiceUnavailable", "InternalServerError", "UNAVAILABLE", "INTERNAL",
             "QUOTA_EXCEEDED", "timeout", "connection_lost"}
CLASSES = {"TooManyRequests": "rate_limited", "QUOTA_EXCEEDED": "rate_limited", "ServiceUnavailable": "provider_error",
           "InternalServerError": "provider_error", "UNAVAILABLE": "provider_error", "INTERNAL": "provider_error",
           "timeout": "transport", "connection_lost": "transport", "PayloadTooLarge": "bad_request",
           "INVALID_ARGUMENT": "bad_request"}
TARGET_KEYS = ("ids", "registration_ids", "users", "filter", "platform", "app")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class SentNotification(dict):  # type: ignore[type-arg]
    """One notification the fake "sent": its fields (``message``, ``title``...), ``cmd``, and
    the devices it reached (``devices``, ``registration_ids``, ``users``)."""

    @property
    def devices(self) -> List[Dict[str, Any]]:
        return self.get("_devices", [])

    @property
    def registration_ids(self) -> List[str]:
        return [d["registration_id"] for d in self.devices]

    @property
    def users(self) -> List[Optional[str]]:
        return [d.get("user") for d in self.devices]


class FakeClient(Commands):
    """Every :class:`pushline.Client` method, answered from memory (see the module's doc)."""

    def __init__(self, apps: Optional[Mapping[str, Sequence[str]]] = None,
                 fail: Optional[Mapping[str, str]] = None, update_on_duplicate_reg_id: bool = False) -> None:
        self.apps: Dict[str, List[str]] = {k: list(v) for k, v in (apps or {"default": PLATFORMS}).items()}
        self.fail: Dict[str, str] = dict(fail or {})
        self.update_on_duplicate_reg_id = update_on_duplicate_reg_id
        self.devices_by_id: Dict[int, Dict[str, Any]] = {}
        self.topics_by_id: Dict[int, set] = {}
        #: Every notification sent, in order.
        self.outbox: List[SentNotification] = []
        #: Every request made: (cmd, arguments).
        self.requests: List[tuple] = []
        self.timeout = None
        self._next_id = 1
        self._errors: List[PushlineError] = []
        self._lock = threading.Lock()
        self.socket_path = "(fake)"
        self._events: List[Dict[str, Any]] = []
        self._jobs: List[Dict[str, Any]] = []
        self._keys: Dict[tuple, Dict[str, Any]] = {}
        self._job_seq = 0

    # -- test helpers ------------------------------------------------------

    def fail_next(self, error: PushlineError) -> None:
        """The next call raises ``error`` (queue several for several calls)."""
        self._errors.append(error)

    def reset(self) -> None:
        """Forgets devices, topics, the outbox and the requests."""
        self.__init__(self.apps, self.fail, self.update_on_duplicate_reg_id)  # type: ignore[misc]

    def close(self) -> None:
        pass

    def __enter__(self) -> "FakeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def iter_devices(self, *, page_size: int = 1000, **filters: Any) -> Iterator[Dict[str, Any]]:
        after = filters.pop("after", None)
        while True:
            page = self.devices(limit=page_size, after=after, **filters)
            yield from page["devices"]
            after = page["next"]
            if after is None:
                return

    # -- the protocol, from memory ----------------------------------------

    def _request(self, cmd: str, request: Dict[str, Any], wrap: type, timeout: Any) -> Any:
        with self._lock:
            self.requests.append((cmd, dict(request)))
            if self._errors:
                raise self._errors.pop(0)
            handler = getattr(self, f"_cmd_{cmd}", None)
            if handler is None:
                raise UnknownCommand("unknown_command", f"unknown command '{cmd}'")
            return wrap(handler(dict(request)))

    def _app(self, app: Optional[str], field: str = "app", register: bool = False) -> str:
        name = app or "default"
        if name not in self.apps:
            msg = f"field '{field}': app '{name}' is not configured (configured apps: {', '.join(sorted(self.apps))})"
            details = {"field": field, "app": name, "apps": sorted(self.apps)}
            if register:
                raise InvalidArgument("invalid_argument", msg, details)
            raise ProviderNotConfigured("provider_not_configured", msg, {**details, "platform": None})
        return name

    @staticmethod
    def _invalid(field: str, why: str) -> InvalidArgument:
        return InvalidArgument("invalid_argument", f"field '{field}': {why}", {"field": field})

    def _cmd_ping(self, r: Dict[str, Any]) -> Dict[str, Any]:
        return {"version": "fake", "protocol": "1.1"}

    def _find(self, app: str, platform: str, token: str) -> Optional[Dict[str, Any]]:
        for d in self.devices_by_id.values():
            if (d["app"], d["platform"], d["registration_id"]) == (app, platform, token):
                return d
        return None

    def _new_device(self, d: Mapping[str, Any], field: str) -> Dict[str, Any]:
        platform = d.get("platform")
        if platform not in PLATFORMS:
            raise self._invalid(f"{field}platform", "expected one of apns, fcm, webpush, wns")
        token = d.get("registration_id")
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise self._invalid(f"{field}registration_id", "expected a token without whitespace")
        unknown = set(d) - {"platform", "registration_id", "app", "name", "user", "device_id", "active", "p256dh",
                            "auth", "browser"}
        if unknown:
            k = sorted(unknown)[0]
            raise self._invalid(f"{field}{k}", f"unknown argument '{k}'")
        now = _now()
        dev = {"id": 0, "platform": platform, "app": self._app(d.get("app"), f"{field}app", register=True),
               "registration_id": token.lower() if platform == "apns" else token, "name": d.get("name"),
               "user": None if d.get("user") is None else str(d["user"]), "device_id": d.get("device_id"),
               "active": d.get("active", True) is not False, "created_at": now, "updated_at": now}
        return dev

    def _cmd_register(self, r: Dict[str, Any]) -> Dict[str, Any]:
        batch = "devices" in r
        items = r["devices"] if batch else [r]
        news = [self._new_device(d, f"devices[{i}]." if batch else "") for i, d in enumerate(items)]
        out = []
        for i, dev in enumerate(news):
            old = self._find(dev["app"], dev["platform"], dev["registration_id"])
            if old is not None:
                if not self.update_on_duplicate_reg_id:
                    field = f"devices[{i}].registration_id" if batch else "registration_id"
                    details: Dict[str, Any] = {"field": field}
                    if batch:
                        details["index"] = i
                    raise DuplicateRegistration("duplicate_registration",
                                                f"{dev['platform']} token is already registered", details)
                out.append((False, old))
                continue
            out.append((True, dev))
        result = []
        for (created, dev), new in zip(out, news):
            if created:
                dev["id"] = self._next_id
                self._next_id += 1
                self.devices_by_id[dev["id"]] = dev
            else:
                dev.update({k: new[k] for k in ("name", "user", "device_id", "active")}, updated_at=_now())
            result.append((created, dict(dev)))
        if batch:
            return {"created": sum(1 for c, _ in result if c), "updated": sum(1 for c, _ in result if not c),
                    "devices": [d for _, d in result]}
        created, dev = result[0]
        return {"created": created, "updated": not created, "device": dev}

    def _key(self, r: Dict[str, Any], single: str = "device") -> List[Dict[str, Any]]:
        if r.get(single) is not None:
            d = self.devices_by_id.get(r[single])
            return [d] if d else []
        if r.get("registration_id") is not None:
            d = self._find(r.get("app") or "default", r.get("platform", ""), r["registration_id"])
            return [d] if d else []
        return []

    def _cmd_unregister(self, r: Dict[str, Any]) -> Dict[str, Any]:
        deleted, missing = 0, []
        keys = r.get("ids") or r.get("registration_ids") or [r.get("device") or r.get("registration_id")]
        for k in keys:
            d = self.devices_by_id.get(k) if isinstance(k, int) else self._find(r.get("app") or "default",
                                                                                  r.get("platform", ""), k)
            if d is None:
                missing.append(k)
            else:
                del self.devices_by_id[d["id"]]
                self.topics_by_id.pop(d["id"], None)
                deleted += 1
        return {"deleted": deleted, "not_found": missing}

    def _matching(self, app: Any = None, platform: Any = None, user: Any = None, active: Any = None,
                  registration_id: Any = None, ids: Any = None, users: Any = None) -> List[Dict[str, Any]]:
        out = []
        for d in sorted(self.devices_by_id.values(), key=lambda d: d["id"]):
            if ((app is None or d["app"] == app) and (platform is None or d["platform"] == platform)
                    and (user is None or d["user"] == user) and (active is None or d["active"] == active)
                    and (registration_id is None or d["registration_id"] == registration_id)
                    and (ids is None or d["id"] in ids) and (users is None or d["user"] in users)):
                out.append(d)
        return out

    def _cmd_devices(self, r: Dict[str, Any]) -> Dict[str, Any]:
        limit = r.pop("limit", 100)
        after = r.pop("after", None) or 0
        found = [d for d in self._matching(**r) if d["id"] > after]
        page = found[:limit]
        return {"devices": [dict(d) for d in page], "next": page[-1]["id"] if len(found) > limit else None}

    def _cmd_update(self, r: Dict[str, Any]) -> Dict[str, Any]:
        found = self._key(r)
        if not found:
            raise NotFound("not_found", "device not found")
        d = found[0]
        new_token = r.get("new_registration_id") or (r.get("registration_id") if r.get("device") else None)
        if new_token:
            other = self._find(d["app"], d["platform"], new_token)
            if other is not None and other is not d:
                raise DuplicateRegistration("duplicate_registration", "token held by another device",
                                            {"field": "registration_id", "device": other["id"]})
            d["registration_id"] = new_token
        for k in ("name", "user", "device_id", "active"):
            if k in r:
                d[k] = r[k]
        d["updated_at"] = _now()
        return {"device": dict(d)}

    def _cmd_prune(self, r: Dict[str, Any]) -> Dict[str, Any]:
        gone = [i for i, d in self.devices_by_id.items() if not d["active"]]
        for i in gone:
            del self.devices_by_id[i]
        return {"deleted": len(gone)}

    def _cmd_stats(self, r: Dict[str, Any]) -> Dict[str, Any]:
        by_app: Dict[str, Dict[str, Dict[str, int]]] = {}
        for d in self.devices_by_id.values():
            e = by_app.setdefault(d["app"], {}).setdefault(d["platform"], {"active": 0, "inactive": 0})
            e["active" if d["active"] else "inactive"] += 1
        active = sum(1 for d in self.devices_by_id.values() if d["active"])
        sent = sum(len(n.devices) for n in self.outbox)
        return {"devices": {"total": len(self.devices_by_id), "active": active,
                            "inactive": len(self.devices_by_id) - active, "by_app": by_app},
                "uptime_s": 0.0, "connections": 1, "pending": 0, "notifications": {"sent": sent, "failed": 0}}

    def _resolve(self, r: Dict[str, Any]) -> tuple:
        given = [k for k in ("ids", "registration_ids", "users", "filter") if r.get(k) is not None]
        if len(given) != 1:
            raise self._invalid(given[0] if given else "ids", "give exactly one target: ids, registration_ids, users, filter")
        kind = given[0]
        rejected: List[Dict[str, Any]] = []
        if kind == "ids":
            if r.get("app") is not None:
                raise self._invalid("app", "does not go with ids")
            devs = []
            for i in r["ids"]:
                d = self.devices_by_id.get(i)
                if d is None:
                    rejected.append({"id": i, "platform": None, "app": None, "registration_id": None,
                                     "status": "failed", "reason": "not_registered", "reason_class": "not_registered",
                                     "retryable": False, "deactivated": False})
                elif not d["active"]:
                    rejected.append(self._failed(d, "inactive", "not_registered"))
                else:
                    devs.append(d)
            return devs, rejected
        if kind == "registration_ids":
            app = self._app(r.get("app"))
            devs = []
            for t in r["registration_ids"]:
                d = self._find(app, r.get("platform", ""), t)
                if d is None:
                    rejected.append({"id": None, "platform": r.get("platform"), "app": None, "registration_id": t,
                                     "status": "failed", "reason": "not_registered", "reason_class": "not_registered",
                                     "retryable": False, "deactivated": False})
                elif not d["active"]:
                    rejected.append(self._failed(d, "inactive", "not_registered"))
                else:
                    devs.append(d)
            return devs, rejected
        if kind == "users":
            app = r.get("app") and self._app(r.get("app"))
            return self._matching(app=app, platform=r.get("platform"), users=r["users"], active=True), rejected
        f = dict(r["filter"])
        if f.get("all") is True and len(f) == 1:
            return self._matching(active=True), rejected
        if not f or "all" in f:
            raise self._invalid("filter", "give at least one of app, platform, user (or {\"all\": true} alone)")
        if f.get("app") is not None:
            self._app(f["app"], "filter.app")
        return self._matching(app=f.get("app"), platform=f.get("platform"), user=f.get("user"), active=True), rejected

    @staticmethod
    def _failed(d: Dict[str, Any], reason: str, cls: str, retryable: bool = False, deactivated: bool = False) -> Dict[str, Any]:
        return {"id": d["id"], "platform": d["platform"], "app": d["app"], "registration_id": d["registration_id"],
                "status": "failed", "reason": reason, "reason_class": cls, "retryable": retryable,
                "deactivated": deactivated}

    def _deliver(self, cmd: str, r: Dict[str, Any], message_index: Optional[int] = None) -> List[Dict[str, Any]]:
        devs, results = self._resolve(r)
        configured = [d for d in devs if d["platform"] in self.apps.get(d["app"], [])]
        if devs and not configured:
            d = devs[0]
            raise ProviderNotConfigured("provider_not_configured", f"app '{d['app']}' has no {d['platform']} credentials",
                                        {"app": d["app"], "platform": d["platform"]})
        reached = []
        for d in devs:
            if d not in configured:
                results.append(self._failed(d, "provider_not_configured", "configuration"))
                continue
            reason = self.fail.get(d["registration_id"])
            if reason is None:
                results.append({"id": d["id"], "platform": d["platform"], "app": d["app"],
                                "registration_id": d["registration_id"], "status": "sent"})
                reached.append(dict(d))
                continue
            dead = reason in DEACTIVATING
            if dead:
                if d["active"]:
                    self._event("device_deactivated", device=d["id"], app=d["app"], platform=d["platform"],
                                registration_id=d["registration_id"], reason=reason)
                d["active"] = False
                d["inactive_reason"] = reason
            results.append(self._failed(d, reason, "invalid_token" if dead else CLASSES.get(reason, "unknown"),
                                        retryable=reason in RETRYABLE, deactivated=dead))
        fields = {k: v for k, v in r.items() if k not in TARGET_KEYS and k != "results"}
        note = SentNotification(fields, cmd=cmd, _devices=reached)
        if message_index is not None:
            note["message_index"] = message_index
            for x in results:
                x["message"] = x["message_index"] = message_index
        if reached:
            self.outbox.append(note)
        return results

    def _answer(self, results: List[Dict[str, Any]], mode: Optional[str]) -> Dict[str, Any]:
        sent = sum(1 for x in results if x["status"] == "sent")
        if mode not in (None, "all", "failed", "none"):
            raise self._invalid("results", "expected one of \"all\", \"failed\", \"none\"")
        shown = [] if mode == "none" else [x for x in results if mode != "failed" or x["status"] == "failed"]
        return {"sent": sent, "failed": len(results) - sent, "results": shown}

    # -- async jobs and events (protocol 1.2) --------------------------------

    def _event(self, kind: str, **fields: Any) -> None:
        self._events.append({"seq": len(self._events) + 1, "type": kind, "at": _now(), **fields})

    def _job_json(self, j: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v for k, v in j.items() if not k.startswith("_")}

    def _async(self, cmd: str, r: Dict[str, Any], run: Any) -> Optional[Dict[str, Any]]:
        """Accepts an async request as a job (None: not async)."""
        is_async = r.pop("async", None)
        send_at = r.pop("send_at", None)
        key = r.pop("idempotency_key", None)
        if not is_async:
            if send_at is not None or key is not None:
                raise self._invalid("send_at" if send_at is not None else "idempotency_key", "only with \"async\": true")
            return None
        if key is not None:
            if not isinstance(key, str) or len(key.encode()) > 255:
                raise self._invalid("idempotency_key", "expected a string of at most 255 bytes")
            first = self._keys.get((r.get("app") or "default", key))
            if first is not None:
                return {"job": {"id": first["id"], "state": first["state"]}, "duplicate": True}
        self._job_seq += 1
        job = {"id": f"fake-{self._job_seq}", "state": "queued", "devices": 0, "sent": 0, "failed": 0, "pending": 0,
               "canceled": 0, "created_at": _now(), "started_at": None, "finished_at": None,
               "app": r.get("app"), "_cmd": cmd, "_run": run, "_request": dict(r), "_results": []}
        if key is not None:
            job["idempotency_key"] = key
            self._keys[(r.get("app") or "default", key)] = job
        self._jobs.append(job)
        if send_at is not None and send_at > _time.time():
            job["state"] = "scheduled"
            return {"job": {"id": job["id"], "state": "scheduled"}}
        self._run_job(job)
        return {"job": {"id": job["id"], "state": "queued"}}

    def _run_job(self, job: Dict[str, Any]) -> None:
        job["started_at"] = _now()
        results = job["_run"](dict(job["_request"]))["results"]
        sent = sum(1 for x in results if x["status"] == "sent")
        job.update(state="done", devices=len(results), sent=sent, failed=len(results) - sent, pending=0,
                   finished_at=_now(), _results=results)
        self._event("job_done", job=job["id"], devices=job["devices"], sent=sent, failed=job["failed"], canceled=0)

    def run_scheduled(self) -> int:
        """Delivers every ``scheduled`` job now (as if its ``send_at`` had come); how many ran."""
        with self._lock:
            due = [j for j in self._jobs if j["state"] == "scheduled"]
            for j in due:
                self._run_job(j)
            return len(due)

    def _find_job(self, r: Dict[str, Any]) -> Dict[str, Any]:
        for j in self._jobs:
            if j["id"] == r.get("job"):
                return j
        raise NotFound("not_found", f"no job '{r.get('job')}'", {"job": r.get("job")})

    def _cmd_job(self, r: Dict[str, Any]) -> Dict[str, Any]:
        j = self._find_job(r)
        out: Dict[str, Any] = {"job": self._job_json(j)}
        if r.get("results"):
            after, limit = int(r.get("after") or 0), int(r.get("limit") or 1000)
            page = j["_results"][after:after + limit]
            out["results"] = page
            out["next"] = after + limit if after + limit < len(j["_results"]) else None
        return out

    def _cmd_jobs(self, r: Dict[str, Any]) -> Dict[str, Any]:
        jobs = [self._job_json(j) for j in self._jobs
                if r.get("state") in (None, j["state"]) and r.get("app") in (None, j["app"] or "default")]
        return {"jobs": jobs, "next": None}

    def _cmd_cancel(self, r: Dict[str, Any]) -> Dict[str, Any]:
        j = self._find_job(r)
        if j["state"] in ("scheduled", "queued"):
            j.update(state="canceled", finished_at=_now())
            self._event("job_canceled", job=j["id"], devices=j["devices"], sent=j["sent"], failed=j["failed"],
                        canceled=j["canceled"])
        return {"job": self._job_json(j)}

    def _cmd_events(self, r: Dict[str, Any]) -> Dict[str, Any]:
        after = r.get("after") or 0
        limit = r.get("limit") or 1000
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise self._invalid("limit", "must be between 1 and 1000")
        if not isinstance(r.get("wait_ms") or 0, int) or not 0 <= (r.get("wait_ms") or 0) <= 60000:
            raise self._invalid("wait_ms", "must be between 0 and 60000")
        if after > len(self._events):
            raise self._invalid("after", f"{after} is beyond the newest event ever written ({len(self._events)})")
        page = [dict(e) for e in self._events[after:after + limit]]
        return {"events": page, "next": page[-1]["seq"] if page else after}

    def events(self, *, after: int = 0, limit: int = 1000, wait_ms: int = 0, stop_when_idle: bool = True,
               reconnect: bool = True, reconnect_delay: float = 1.0) -> EventStream:
        """The events feed from memory; ends when no event is left (``stop_when_idle``)."""
        return EventStream(self.events_page, after=after, limit=limit, wait_ms=0, stop_when_idle=True,
                           reconnect=False)

    @property
    def feed(self) -> List[Dict[str, Any]]:
        """Every event written so far (``device_deactivated``, ``job_done``, ``job_canceled``)."""
        return [dict(e) for e in self._events]

    def _cmd_send(self, r: Dict[str, Any]) -> Dict[str, Any]:
        job = self._async("send", r, self._cmd_send)
        if job is not None:
            return job
        return self._answer(self._deliver("send", r), r.get("results"))

    def _cmd_bulk(self, r: Dict[str, Any]) -> Dict[str, Any]:
        job = self._async("bulk", r, self._cmd_bulk)
        if job is not None:
            return job
        if "messages" not in r:
            return self._answer(self._deliver("bulk", r), r.get("results"))
        results: List[Dict[str, Any]] = []
        for i, m in enumerate(r["messages"]):
            if m.get("app") is not None:
                self._app(m["app"], f"messages[{i}].app")
        for i, m in enumerate(r["messages"]):
            results += self._deliver("bulk", dict(m), message_index=i)
        return self._answer(results, r.get("results"))

    def _cmd_topic(self, r: Dict[str, Any]) -> Dict[str, Any]:
        """FCM's topic result, then (``topic`` only, not ``condition``) the recorded APNs/WebPush/WNS
        subscribers of the app, as the daemon's fan-out."""
        job = self._async("topic", r, self._cmd_topic)
        if job is not None:
            return job
        app = self._app(r.get("app"))
        name = r.get("topic") or r.get("condition")
        topic = str(r["topic"]).replace("/topics/", "") if r.get("topic") else None
        others = [d for i, d in sorted(self.devices_by_id.items())
                  if topic and topic in self.topics_by_id.get(i, ()) and d["app"] == app and d["platform"] != "fcm"
                  and d["active"] and d["platform"] in self.apps[app]]
        has_fcm = "fcm" in self.apps[app]
        if not has_fcm and not others:
            raise ProviderNotConfigured("provider_not_configured", f"app '{app}' has no fcm credentials",
                                        {"app": app, "platform": "fcm"})
        fields = {k: v for k, v in r.items() if k not in ("topic", "condition", "app")}
        self.outbox.append(SentNotification(fields, cmd="topic", topic=r.get("topic"), condition=r.get("condition"),
                                            _devices=[dict(d) for d in others]))
        label = f"/topics/{name}" if r.get("topic") and not str(name).startswith("/topics/") else name
        results = [{"id": None, "platform": "fcm", "app": app, "registration_id": label, "status": "sent"}] if has_fcm else []
        results += [{"id": d["id"], "platform": d["platform"], "app": app, "registration_id": d["registration_id"],
                     "status": "sent"} for d in others]
        return {"sent": len(results), "failed": 0, "results": results}

    def _subscription(self, r: Dict[str, Any], on: bool) -> Dict[str, Any]:
        topic = str(r.pop("topic")).replace("/topics/", "")
        devs, results = self._resolve(r)
        ok = 0
        for d in devs:  # every platform is recorded (protocol 1.1)
            s = self.topics_by_id.setdefault(d["id"], set())
            (s.add if on else s.discard)(topic)
            ok += 1
            results.append({"id": d["id"], "platform": d["platform"], "app": d["app"],
                            "registration_id": d["registration_id"], "status": "subscribed" if on else "unsubscribed"})
        return {"succeeded": ok, "failed": len(results) - ok, "results": results}

    def _cmd_subscribe(self, r: Dict[str, Any]) -> Dict[str, Any]:
        return self._subscription(r, True)

    def _cmd_unsubscribe(self, r: Dict[str, Any]) -> Dict[str, Any]:
        return self._subscription(r, False)

    def _cmd_topics(self, r: Dict[str, Any]) -> Dict[str, Any]:
        devs, _ = self._resolve(r)
        return {"devices": [{"id": d["id"], "topics": sorted(self.topics_by_id.get(d["id"], ()))} for d in devs]}

    def _cmd_subscribers(self, r: Dict[str, Any]) -> Dict[str, Any]:
        topic = str(r["topic"]).replace("/topics/", "")
        app = r.get("app") or "default"
        return {"devices": [dict(self.devices_by_id[i]) for i, ts in sorted(self.topics_by_id.items())
                            if topic in ts and self.devices_by_id[i]["app"] == app]}


# Keep DEFAULT importable from here for type checkers of callers passing timeout=.
_ = DEFAULT, Result
