"""pushline-send against a real daemon: the shared scenario plus exit codes, escaping and transports."""

import json
import shutil

import pytest

TOKEN = "ab" * 32


def register(run, **fields):
    req = {"cmd": "register", **fields}
    r = run("--ndjson", stdin=json.dumps(req) + "\n")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ndjson_register_and_list(run):
    dev = register(run, platform="apns", registration_id=TOKEN, user="42")["device"]
    lines = "\n".join([json.dumps({"id": "a", "cmd": "devices", "user": "42"}), "",
                       json.dumps({"id": "b", "cmd": "ping"})]) + "\n"
    r = run("--ndjson", stdin=lines)
    assert r.returncode == 0, r.stderr
    out = [json.loads(l) for l in r.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", "b"]
    assert [d["id"] for d in out[0]["devices"]] == [dev["id"]]
    assert out[1]["protocol"].startswith("1.")


def test_send_to_user_without_provider(run):
    register(run, platform="apns", registration_id=TOKEN, user="42")
    r = run("--user", "42", "--message", "Deploy done", "--title", "CI")
    assert r.returncode == 1
    assert "error provider_not_configured:" in r.stderr
    resp = json.loads(r.stdout)
    assert resp["ok"] is False and resp["error"]["platform"] == "apns"


def test_quiet_prints_nothing_on_stdout(run):
    register(run, platform="apns", registration_id=TOKEN, user="42")
    r = run("--quiet", "--user", "42", "--message", "x")
    assert r.returncode == 1 and r.stdout == "" and "provider_not_configured" in r.stderr


def test_unknown_field_names_it(run):
    r = run("--device", "1", "--message", "x", "--set", "nmae=Work")
    assert r.returncode == 1
    assert "error invalid_argument" in r.stderr and "nmae" in r.stderr


def test_bad_input_errors(run):
    register(run, platform="fcm", registration_id="dup-token")
    lines = [
        {"cmd": "register", "platform": "apns", "registration_id": "not-hex"},
        {"cmd": "register", "platform": "fcm", "registration_id": "dup-token"},
        {"cmd": "update", "device": 987654, "name": "x"},
        {"cmd": "ping"},
    ]
    r = run("--ndjson", stdin="".join(json.dumps(l) + "\n" for l in lines))
    assert r.returncode == 1
    codes = [json.loads(l).get("error", {}).get("code") for l in r.stdout.splitlines()]
    assert codes == ["invalid_argument", "duplicate_registration", "not_found", None]
    err = r.stderr.splitlines()
    assert err[0].startswith("pushline-send: error invalid_argument:") and "(field registration_id)" in err[0]
    assert err[1].startswith("pushline-send: error duplicate_registration:")
    assert err[2].startswith("pushline-send: error not_found:")


def test_escaping_survives_the_daemon(run):
    text = 'He said "hi"\\ \t tab\nnew line, é, \x01 ctl, trailing newline\n'
    r = run("--print-request", "--user", "42", "--message", text, "--title", "", "--extra", '{"order": 981}')
    assert r.returncode == 0, r.stderr
    req = json.loads(r.stdout)
    assert req == {"cmd": "send", "users": ["42"], "message": text, "title": "", "extra": {"order": 981}}
    # The daemon parses the same line (no bad_json): it answers with the provider error.
    register(run, platform="apns", registration_id=TOKEN, user="42")
    r = run("--user", "42", "--message", text, "--title", "", "--extra", '{"order": 981}')
    assert json.loads(r.stdout)["error"]["code"] == "provider_not_configured"


def test_targets(run):
    r = run("--print-request", "--device", "17", "--device", "18", "--message", "m", "--app", "shop")
    assert json.loads(r.stdout) == {"cmd": "send", "ids": [17, 18], "app": "shop", "message": "m"}
    r = run("--print-request", "--token", "t1", "--platform", "fcm", "--message", "m", "--badge", "3")
    assert json.loads(r.stdout) == {"cmd": "send", "registration_ids": ["t1"], "platform": "fcm", "message": "m",
                                    "badge": 3}
    r = run("--print-request", "--topic", "news", "--message", "m", "--dry-run")
    assert json.loads(r.stdout) == {"cmd": "topic", "topic": "news", "message": "m", "dry_run": True}


@pytest.mark.parametrize("args, complaint", [
    (["--message", "x"], "exactly one kind of target"),
    (["--user", "1", "--device", "2", "--message", "x"], "exactly one kind of target"),
    (["--user", "1"], "--message"),
    (["--token", "t", "--message", "x"], "--token needs --platform"),
    (["--device", "abc", "--message", "x"], "--device takes"),
    (["--bogus"], "unknown option"),
])
def test_usage_errors(run, args, complaint):
    r = run(*args)
    assert r.returncode == 2 and complaint in r.stderr


def test_daemon_down(run, daemon):
    daemon.stop()
    r = run("--user", "1", "--message", "x")
    assert r.returncode == 2 and "no Pushline socket" in r.stderr


@pytest.mark.parametrize("transport", ["socat", "nc"])
def test_fallback_transport(run, transport):
    if shutil.which(transport) is None:
        pytest.skip(f"{transport} is not installed")
    lines = "".join(json.dumps({"id": i, "cmd": "ping"}) + "\n" for i in range(50))
    r = run("--ndjson", stdin=lines, env={"PUSHLINE_TRANSPORT": transport, "PUSHLINE_BIN": "/nonexistent"})
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["id"] for l in r.stdout.splitlines()] == list(range(50))
    register(run, platform="apns", registration_id=TOKEN, user="42")
    r = run("--user", "42", "--message", "x", env={"PUSHLINE_TRANSPORT": transport})
    assert r.returncode == 1 and "provider_not_configured" in r.stderr


def test_falls_back_when_binary_missing(run):
    if shutil.which("socat") is None and shutil.which("nc") is None:
        pytest.skip("neither socat nor nc is installed")
    r = run("--ndjson", stdin='{"cmd":"ping"}\n', env={"PUSHLINE_BIN": "/nonexistent/pushline", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True


# -- issue 16 ---------------------------------------------------------------------------

def test_stats_is_not_read_as_failed_devices(run):
    # stats has "notifications": {"sent": .., "failed": ..}: not device failures of this request.
    send = json.dumps({"cmd": "send", "ids": [999999], "message": "x"}) + "\n"
    assert run("--ndjson", stdin=send).returncode == 4  # one failed device in the daemon's counters
    stats = json.dumps({"cmd": "stats"}) + "\n"
    r = run("--ndjson", "--strict", stdin=stats)
    assert json.loads(r.stdout)["notifications"]["failed"] >= 1
    assert r.returncode == 0 and "failed" not in r.stderr, r.stderr
    r = run("--ndjson", "--strict", stdin=send + stats)
    assert r.returncode == 3 and r.stderr.count("device(s) failed") == 1, r.stderr


def test_nothing_delivered_exits_non_zero(run):
    r = run("--device", "99999", "--message", "hi")
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert "nothing was delivered" in r.stderr and "not_registered" in r.stderr
    assert run("--allow-undelivered", "--device", "99999", "--message", "hi").returncode == 0
    # A user without devices: nothing delivered either.
    assert run("--user", "nobody", "--message", "hi").returncode == 4
    # Non-send commands are not deliveries.
    assert run("--ndjson", stdin='{"cmd":"ping"}\n').returncode == 0


@pytest.mark.parametrize("args, complaint", [
    (["--extra", '{"order": 981'], "--extra: expected , or }"),
    (["--extra", "[1]"], "--extra: expected a JSON object"),
    (["--extra", "{'a': 1}"], "--extra: expected a \"key\""),
    (["--json", "sound={bad}"], "--json sound:"),
])
def test_extra_and_json_are_checked_locally(run, args, complaint):
    r = run("--user", "1", "--message", "x", *args)
    assert r.returncode == 2 and complaint in r.stderr, r.stderr
    assert r.stdout == ""
    assert run.request({"cmd": "stats"})["notifications"] == {"sent": 0, "failed": 0}
