"""What the libFuzzer targets (Tests/fuzz/) found, end to end: the real daemon against the fake APNs.
Each request used to reach a provider unchecked; it must now fail with invalid_argument, send
nothing, and leave the daemon serving."""
import pytest

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs

TOKEN = "ab" * 32


@pytest.fixture
def fake():
    f = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    yield f
    f.stop()


@pytest.fixture
def d(start_daemon, fake):
    d = start_daemon({"apps": {"default": {"apns": fake.apns_block()}}})
    r = d.call({"cmd": "register", "platform": "apns", "registration_id": TOKEN})
    assert r["ok"], r
    return d


def refused(d, field, **note):
    r = d.call({"cmd": "send", "platform": "apns", "registration_ids": [TOKEN], "message": "x", **note})
    assert not r["ok"] and r["error"]["code"] == "invalid_argument", r
    assert r["error"]["field"] == field, r
    assert d.call({"cmd": "ping"})["ok"]


def test_huge_time_to_live_is_refused_not_a_crash(d, fake):
    # now + time_to_live overflowed Int64: the daemon trapped and the connection dropped.
    refused(d, "time_to_live", time_to_live=2**63 - 1)
    refused(d, "time_to_live", time_to_live=2**31)
    assert fake.received() == []
    r = d.call({"cmd": "send", "platform": "apns", "registration_ids": [TOKEN], "message": "x", "time_to_live": 2**31 - 1})
    assert r["ok"] and r["sent"] == 1, r


def test_header_injection_is_refused(d, fake):
    refused(d, "collapse_id", collapse_id="a\r\nx-evil: 1")
    refused(d, "topic", topic=TOPIC + "\nx-evil: 1")
    refused(d, "apns.headers.apns-x y", apns={"headers": {"apns-x y": "1"}})
    refused(d, "apns.headers.apns-x", apns={"headers": {"apns-x": "1\r\nx-evil: 1"}})
    assert fake.received() == []
