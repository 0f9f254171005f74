"""Ad-hoc (issue 17): one `send` to N devices vs a `bulk` of N one-device messages, through the
daemon, against nginx+njs answering as APNs does (200, apns-id, no body) after a delay; then a
100-message bulk against a sink answering after 1 s. Indicative only; see bulk_latency.sh.

    python3 bench/adhoc/bulk_latency.py BIN PORT_50MS CA PORT_1S CA [N] [REPEAT]

Seen 2026-12-05 on the shared 2-core machine (load average 14, other helpers building/testing;
the njs sink itself tops out near 14k requests/s with h2load), release builds:
  main:  send to 1,000: 5,464/s; bulk of 1,000 one-device messages: 39/s (0.01x); 100 messages @1 s: 50.1 s
  bulk:  send to 10,000: 8,287-9,144/s; bulk of 10,000 messages: 5,851-7,322/s (0.71-0.85x, daemon
         CPU 0.55-0.61 s vs 0.47-0.51 s for the send; the bulk's wall time also holds Python's
         ~20 ms json.dumps of its 0.7 MB request); 100 messages @1 s: 1.02 s (send: 1.01 s)
"""
import json, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import Conn, cpu_s

bin_, port50, ca50, port1s, ca1s = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
n = int(sys.argv[6]) if len(sys.argv) > 6 else 10_000
reps = int(sys.argv[7]) if len(sys.argv) > 7 else 2
work = Path(tempfile.mkdtemp(prefix="bulkbench."))
key = work / "AuthKey.p8"
subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)], check=True, capture_output=True)
def block(port, ca):
    return {"key_path": str(key), "key_id": "BENCHKEY01", "team_id": "BENCHTEAM1", "topic": "com.example.bench",
            "endpoint": f"https://localhost:{port}", "ca_file": ca}
config = {"socket": str(work / "p.sock"), "database": str(work / "p.db"), "max_line_bytes": 64 << 20, "log_level": "warning",
          "apps": {"default": {"apns": block(port50, ca50)}, "slow": {"apns": block(port1s, ca1s)}}}
(work / "config.json").write_text(json.dumps(config))
proc = subprocess.Popen([bin_, "serve", "--config", str(work / "config.json")], stdout=open(work / "log", "wb"), stderr=subprocess.STDOUT)
try:
    for _ in range(200):
        try:
            c = Conn(str(work / "p.sock"))
            if c.call({"cmd": "ping"})["ok"]: break
        except OSError:
            time.sleep(0.05)
    toks = [f"{i:064x}" for i in range(1, n + 1)]
    ids = []
    for s in range(0, n, 20000):
        r = c.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t} for t in toks[s:s + 20000]]})
        ids += [d["id"] for d in r["devices"]]
    r = c.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t, "app": "slow"} for t in toks[:100]]})
    slow = [d["id"] for d in r["devices"]]
    c.call({"cmd": "send", "ids": ids[:1], "message": "warm"})
    c.call({"cmd": "send", "ids": slow[:1], "message": "warm"})
    def timed(req):
        cpu0 = cpu_s(proc.pid); t0 = time.time(); r = c.call(req); dt = c.received_at - t0
        assert r["ok"], str(r)[:300]
        if r["failed"]:
            import collections
            print("   failures:", collections.Counter((x.get("reason"), x.get("error")) for x in r["results"] if x["status"] == "failed").most_common(3))
        return dt, r["sent"], cpu_s(proc.pid) - cpu0
    for rep in range(reps):
        dt, sent, cpu = timed({"cmd": "send", "ids": ids, "message": "A benchmark notification", "title": "Hello"})
        send_rate = sent / dt
        print(f"send to {n} devices @50ms: {dt:.2f} s, {send_rate:.0f}/s (sent {sent}), daemon CPU {cpu:.2f} s", flush=True)
        msgs = [{"ids": [i], "message": f"Your order {k} shipped", "title": "Hello"} for k, i in enumerate(ids)]
        dt, sent, cpu = timed({"cmd": "bulk", "messages": msgs})
        print(f"bulk of {n} one-device messages @50ms: {dt:.2f} s, {sent / dt:.0f}/s (sent {sent}), daemon CPU {cpu:.2f} s, "
              f"ratio to send {sent / dt / send_rate:.2f}", flush=True)
    dt, sent, _ = timed({"cmd": "send", "ids": slow, "message": "x"})
    print(f"send to 100 devices @1s: {dt:.2f} s", flush=True)
    dt, sent, _ = timed({"cmd": "bulk", "messages": [{"ids": [i], "message": f"m{k}"} for k, i in enumerate(slow)]})
    print(f"bulk of 100 messages @1s: {dt:.2f} s (sent {sent})", flush=True)
finally:
    proc.terminate(); proc.wait()
