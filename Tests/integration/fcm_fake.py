"""Runs Tests/fakes/fake_fcm.py as a subprocess and talks to its control channel.

    fake = FakeFCMProcess(tmp_path, projects=["proj-a", "proj-b"])
    fake.service_account("proj-a")      # path of a generated service-account JSON for that project
    fake.control(op="unregister", tokens=["tok1"])
    fake.stats()["token_requests"]
    fake.stop()
"""
import json
import os
import socket
import subprocess
import sys

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes")


class FakeFCMProcess:
    def __init__(self, directory, projects=("pushline-test",), max_streams=1000):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.sa_paths = {p: os.path.join(self.dir, f"sa-{p}.json") for p in projects}
        args = [sys.executable, os.path.join(FAKES, "fake_fcm.py"), "--dir", self.dir,
                "--max-streams", str(max_streams)]
        for p, path in self.sa_paths.items():
            args += ["--write-service-account", f"{path}:{p}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, "fake_fcm.log"), "w"),
                                     text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.proc.kill()
            raise RuntimeError("fake_fcm did not start: " + open(os.path.join(self.dir, "fake_fcm.log")).read())
        self.port = int(line[1])
        self.ca_file = line[2]
        self.control_port = int(line[3])
        self._sock = None
        self._buf = b""

    @property
    def base_url(self):
        return f"https://127.0.0.1:{self.port}"

    def service_account(self, project="pushline-test"):
        return self.sa_paths[project]

    def fcm_block(self, project="pushline-test", **extra):
        """An app's `fcm` config block pointing at this fake."""
        block = {"service_account_path": self.service_account(project), "endpoint": self.base_url,
                 "iid_endpoint": self.base_url, "ca_file": self.ca_file}
        block.update(extra)
        return block

    def control(self, **req):
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=10)
        self._sock.sendall((json.dumps(req) + "\n").encode())
        while b"\n" not in self._buf:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("fake_fcm control channel closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        resp = json.loads(line)
        if not resp.get("ok"):
            raise RuntimeError(f"fake_fcm control {req}: {resp}")
        return resp

    def stats(self):
        return self.control(op="stats")

    def messages(self, since=0):
        return self.control(op="messages", since=since)["messages"]

    def subscriptions(self):
        return self.control(op="subscriptions")["subscriptions"]

    def stop(self):
        if self._sock:
            self._sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
