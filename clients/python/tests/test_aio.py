"""pushline.aio.AsyncClient against a real daemon (asyncio.run per test; no plugin needed)."""

import asyncio
import json
import os
import socket
import threading

import pytest

import pushline
import pushline.aio
from conftest import apns_token


def run(coro):
    return asyncio.run(coro)


def test_same_methods_as_the_blocking_client():
    sync = {m for m in dir(pushline.Client) if not m.startswith("_")}
    aio = {m for m in dir(pushline.aio.AsyncClient) if not m.startswith("_")}
    assert sync - aio <= {"server", "close"}, sync - aio


def test_register_list_update_send(daemon):
    async def main():
        async with pushline.aio.AsyncClient(daemon.socket) as pl:
            assert (await pl.ping())["protocol"].startswith("1.")
            reg = await pl.register(platform="apns", registration_id=apns_token(1), user=42, name="Ann")
            assert isinstance(reg, pushline.RegisterResult) and reg.created is True
            batch = await pl.register(devices=[{"platform": "fcm", "registration_id": f"t{i}", "user": "42"}
                                               for i in range(5)])
            assert batch.created == 5
            seen = [d.id async for d in pl.iter_devices(user="42", page_size=2)]
            assert len(seen) == 6 and seen == sorted(seen)
            upd = await pl.update(device=reg.device.id, name=None)
            assert upd.device.name is None
            with pytest.raises(pushline.ProviderNotConfigured):
                await pl.send(users=["42"], message="hi")
            with pytest.raises(pushline.ArgumentTypeError):
                await pl.send(users="42", message="hi")
            with pytest.raises(pushline.InvalidArgument) as e:
                await pl.register(platform="apns", registration_id="nothex")
            assert e.value.field == "registration_id"
            # The connection that carried an error answer is still good.
            assert (await pl.stats())["devices"]["total"] == 6
    run(main())


def test_concurrent_tasks_use_several_connections(daemon):
    async def main():
        async with pushline.aio.AsyncClient(daemon.socket, max_connections=4) as pl:
            await asyncio.gather(*(pl.register(platform="fcm", registration_id=f"c{i}", user=str(i % 3))
                                   for i in range(40)))
            counts = await asyncio.gather(*(pl.devices(user=str(u)) for u in range(3)))
            assert sorted(len(c.devices) for c in counts) == [13, 13, 14]
            assert 1 < len(pl._idle) <= 4
    run(main())


def test_reconnects_after_daemon_restart(daemon):
    async def main():
        async with pushline.aio.AsyncClient(daemon.socket) as pl:
            dev = (await pl.register(platform="fcm", registration_id="survivor")).device
            daemon.restart()
            page = await pl.devices(ids=[dev.id])
            assert page.devices[0].registration_id == "survivor"
    run(main())


def test_per_call_timeout(workdir):
    path = os.path.join(workdir, "slow.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    conns = []

    def serve():  # answers ping, then nothing
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            data = b""
            while b"\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            if data:
                rid = json.loads(data.split(b"\n")[0])["id"]
                c.sendall(json.dumps({"id": rid, "ok": True, "version": "x", "protocol": "1.1"}).encode() + b"\n")

    threading.Thread(target=serve, daemon=True).start()

    async def main():
        pl = pushline.aio.AsyncClient(path, timeout=60)
        with pytest.raises(pushline.ConnectionTimeout) as e:
            await pl.send(users=["1"], message="x", timeout=0.3)
        assert e.value.request_sent and not e.value.retryable
        await pl.aclose()
    try:
        run(main())
    finally:
        srv.close()
        for c in conns:
            c.close()


def test_connection_error_when_no_daemon(workdir):
    async def main():
        with pytest.raises(pushline.ConnectionError) as e:
            await pushline.aio.AsyncClient(os.path.join(workdir, "none.sock")).ping()
        assert e.value.retryable
    run(main())


def test_bulk_send(daemon):
    async def main():
        async with pushline.aio.AsyncClient(daemon.socket) as pl:
            ids = [d.id for d in (await pl.register(devices=[{"platform": "fcm", "registration_id": f"b{i}"}
                                                             for i in range(30)])).devices]
            r = await pl.bulk_send(ids, chunk=7, message="Sale!")
            assert r.requests == 5 and [e.index for e in r.errors] == [0, 1, 2, 3, 4]
            assert all(isinstance(e.error, pushline.ProviderNotConfigured) for e in r.errors)
    run(main())
