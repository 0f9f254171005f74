"""pushline.testing.FakeClient: the same methods, checks, typed results and errors as the
real client, answered from memory; checked side by side with a real daemon."""

import pytest

import pushline
from conftest import apns_token
from pushline.testing import FakeClient


def scenario(pl):
    """Registry commands whose answers must match between the fake and the daemon."""
    out = []
    reg = pl.register(platform="apns", registration_id=apns_token(1).upper(), user=42, name="Ann")
    out.append((type(reg).__name__, reg.created, reg.device.registration_id, reg.device.user, reg.device.name))
    batch = pl.register(devices=[{"platform": "fcm", "registration_id": f"t{i}", "user": "42"} for i in range(3)])
    out.append((batch.created, batch.updated, len(batch.devices)))
    with pytest.raises(pushline.DuplicateRegistration) as e:
        pl.register(devices=[{"platform": "fcm", "registration_id": "new"}, {"platform": "fcm", "registration_id": "t1"}])
    out.append((e.value.field, e.value.details.get("index")))
    with pytest.raises(pushline.InvalidArgument) as e:
        pl.register(platform="fcm", registration_id="x", app="nope")
    out.append((e.value.field, e.value.details.get("apps")))
    with pytest.raises(pushline.ArgumentTypeError):
        pl.send(users="42", message="x")
    page = pl.devices(user="42", limit=2)
    out.append((len(page.devices), page.next is not None))
    out.append(len(list(pl.iter_devices(user="42", page_size=3))))
    upd = pl.update(device=reg.device.id, name=None, user="7")
    out.append((upd.device.name, upd.device.user))
    out.append(pl.unregister(ids=[reg.device.id, 999])["not_found"])
    with pytest.raises(pushline.NotFound):
        pl.update(device=999, name="x")
    s = pl.stats()
    out.append((s["devices"]["total"], s["devices"]["by_app"]))
    return out


def test_fake_answers_like_the_daemon(client):
    assert scenario(FakeClient()) == scenario(client)


def test_sends_are_recorded_and_failures_simulated():
    pl = FakeClient(fail={"dead": "Unregistered", "slow": "TooManyRequests"})
    for t in ("ok", "dead", "slow"):
        pl.register(platform="fcm", registration_id=t, user="1")
    r = pl.send(users=["1"], title="Hi", message="Your order shipped", extra={"order": 981})
    assert (r.sent, r.failed) == (1, 2)
    by = {x.registration_id: x for x in r.results}
    assert by["dead"].reason_class == "invalid_token" and by["dead"].deactivated and not by["dead"].retryable
    assert by["slow"].reason_class == "rate_limited" and by["slow"].retryable
    [note] = pl.outbox
    assert note["message"] == "Your order shipped" and note["extra"] == {"order": 981}
    assert note.registration_ids == ["ok"] and note.users == ["1"]
    # The dead device was deactivated, as the daemon does.
    assert [d.registration_id for d in pl.devices(active=False).devices] == ["dead"]
    assert pl.send(users=["1"], message="x", results="failed").results == [by["slow"]]


def test_errors_and_refusals():
    pl = FakeClient(apps={"default": ["fcm"], "shop": []})
    pl.register(platform="apns", registration_id=apns_token(2), user="1")
    with pytest.raises(pushline.ProviderNotConfigured):
        pl.send(users=["1"], message="x")
    with pytest.raises(pushline.ProviderNotConfigured) as e:
        pl.send(users=["1"], app="nope", message="x")
    assert e.value.details["apps"] == ["default", "shop"]
    with pytest.raises(pushline.InvalidArgument):
        pl.call("send", filter={}, message="x")
    pl.fail_next(pushline.Busy("busy", "later", {"retry_after_ms": 50}))
    with pytest.raises(pushline.Busy) as e:
        pl.stats()
    assert e.value.retryable
    assert pl.stats()["devices"]["total"] == 1
    assert [c for c, _ in pl.requests] == ["register", "send", "send", "send", "stats", "stats"]


def test_fake_client_jobs_and_events():
    import time

    import pushline
    from pushline.testing import FakeClient

    fake = FakeClient(fail={"dead": "Unregistered"})
    ok = fake.register(platform="fcm", registration_id="tok", user="42").device.id
    dead = fake.register(platform="fcm", registration_id="dead", user="42").device.id
    r = fake.send(users=["42"], message="hi", async_=True, idempotency_key="k1")
    assert isinstance(r, pushline.JobAccepted) and r.state == "queued" and not r.duplicate
    again = fake.send(users=["42"], message="hi", idempotency_key="k1")
    assert again.job_id == r.job_id and again.duplicate
    job = fake.job(r.job_id)
    assert job.state == "done" and (job.devices, job.sent, job.failed) == (2, 1, 1)
    assert len(fake.job(r.job_id, results=True, limit=1).results) == 1
    later = fake.send(ids=[ok], message="later", send_at=time.time() + 3600)
    assert later.state == "scheduled" and fake.job(later.job_id).state == "scheduled"
    assert fake.cancel(later.job_id).state == "canceled"
    assert [j.id for j in fake.jobs(state="canceled").jobs] == [later.job_id]
    stream = fake.events()
    got = list(stream)
    assert [e.type for e in got] == ["device_deactivated", "job_done", "job_canceled"]
    assert got[0].device == dead and got[0].reason == "Unregistered" and got[1].job == r.job_id
    assert stream.cursor == got[-1].seq
    fake.send(users=["42"], message="again")  # the dead device is inactive: no second event
    assert list(fake.events(after=stream.cursor)) == []
    with pytest.raises(pushline.NotFound):
        fake.job("nope")
