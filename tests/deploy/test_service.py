"""`cellax serve`: a real uvicorn server on a loopback port, real concurrent clients over HTTP and
WebSocket, malformed samples, wrong tokens, and a `kill -9` mid-stream followed by a restart."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import jax
import numpy as np
import pytest
import websockets

from cellax.deploy.export import load_step
from cellax.deploy.service import Service
from cellax.deploy.step import rollout_stream
from tests.deploy.test_export import assert_close, held_out

TOKEN = "t0ken-for-the-deploy-tests-0123456789"
CELLS, SAMPLES = 50, 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``cellax serve`` in a subprocess; ``start`` returns once it accepts connections."""

    def __init__(self, runs, state_dir: Path, token_file: Path, *extra):
        self.port = free_port()
        self.args = [sys.executable, "-m", "cellax.cli", "serve", *map(str, runs), "--port", str(self.port),
                     "--token-file", str(token_file), "--state-dir", str(state_dir), *extra]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while True:
            assert self.proc.poll() is None, self.proc.stdout.read()
            with socket.socket() as s:
                s.settimeout(1.0)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            with pytest.raises(subprocess.TimeoutExpired):
                self.proc.wait(0.2)  # wait on the process, not the clock: returns early if it dies

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def server(runs, token_file, tmp_path_factory):
    server = Server([runs["gru"], runs["mamba"]], tmp_path_factory.mktemp("state"), token_file,
                    "--checkpoint-every", "5").start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def profile(runs):
    return held_out(runs["gru"])


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def expected(run, inputs):
    step, _ = load_step(run)
    return np.asarray(jax.jit(rollout_stream)(step, inputs, np.zeros(step.task.n_outputs)))


async def open_session(client, model="gru"):
    r = await client.post("/sessions", json={"model": model}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()["session"]


def test_concurrent_cells_get_their_own_estimates_in_order(server, runs, profile):
    inputs, _, _, scale = profile
    cells = [inputs[3 * c: 3 * c + SAMPLES] for c in range(CELLS)]

    async def cell(client, u):
        sid = await open_session(client)
        answers = []
        for seq, sample in enumerate(u):
            r = await client.post(f"/sessions/{sid}/samples", json={"seq": seq, "inputs": sample.tolist()},
                                  headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["seq"] == seq and r.json()["next_seq"] == seq + 1
            answers.append(r.json()["outputs"])
        return np.array(answers)

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(cell(client, u) for u in cells))

    results = asyncio.run(main())
    for u, got in zip(cells, results):
        assert_close(got, expected(runs["gru"], u), scale)


def test_a_batch_and_a_websocket_stream_give_the_same_answers(server, runs, profile):
    inputs, _, _, scale = profile
    u = inputs[:SAMPLES]
    reference = expected(runs["gru"], u)

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            sid = await open_session(client)
            r = await client.post(f"/sessions/{sid}/samples", json={"seq": 0, "inputs": u.tolist()}, headers=AUTH)
            batch = np.array(r.json()["outputs"])
            sid = await open_session(client)
        url = server.url.replace("http", "ws") + f"/sessions/{sid}/stream?token={TOKEN}"
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv()) == {"session": sid, "next_seq": 0}
            streamed = []
            for seq, sample in enumerate(u):
                await ws.send(json.dumps({"seq": seq, "inputs": sample.tolist()}))
                reply = json.loads(await ws.recv())
                assert reply["seq"] == seq
                streamed.append(reply["outputs"])
            await ws.send(json.dumps({"inputs": [1.0]}))
            assert json.loads(await ws.recv())["field"] == "inputs"
        return batch, np.array(streamed)

    batch, streamed = asyncio.run(main())
    assert_close(batch, reference, scale)
    assert_close(streamed, reference, scale)


def test_malformed_samples_get_422_naming_the_field_and_leave_the_state_unchanged(server, runs, profile):
    inputs, _, _, scale = profile
    good = inputs[:6].tolist()
    nan = [float("nan")] + good[0][1:]
    too_large = {"inputs": [1000.0, *good[0][1:]]}
    bad = [
        ("inputs.current_a", {"inputs": nan}),
        ("inputs", {"inputs": good[0][:-1]}),
        ("inputs.voltage_v", {"inputs": [good[0][0], "3.7", *good[0][2:]]}),
        ("inputs.current_a", too_large),
        ("inputs[1]", {"inputs": [good[0], good[1][:2]]}),
    ]
    with httpx.Client(base_url=server.url, headers=AUTH) as client:
        sid = client.post("/sessions", json={"model": "gru"}).json()["session"]
        got = []
        for i, sample in enumerate(good):
            for field, body in bad:
                r = client.post(f"/sessions/{sid}/samples", content=json.dumps(body),
                                headers={"content-type": "application/json"})
                assert r.status_code == 422 and r.json()["field"] == field, r.text
                assert client.get(f"/sessions/{sid}").json()["next_seq"] == i
            got.append(client.post(f"/sessions/{sid}/samples", json={"inputs": sample}).json()["outputs"])
        assert "outside the cell's limits" in client.post(f"/sessions/{sid}/samples", json=too_large).text
        r = client.post(f"/sessions/{sid}/samples", json={"seq": 2, "inputs": good[0]})
        assert r.status_code == 409 and r.json()["next_seq"] == 6
    assert_close(np.array(got), expected(runs["gru"], inputs[:6]), scale)


def test_a_wrong_token_gets_401_and_an_unknown_session_404(server):
    async def main():
        async with httpx.AsyncClient(base_url=server.url) as client:
            sid = await open_session(client)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN[:-1]}):
                assert (await client.get(f"/sessions/{sid}", headers=headers)).status_code == 401
                r = await client.post(f"/sessions/{sid}/samples", json={"inputs": [0.0] * 5}, headers=headers)
                assert r.status_code == 401 and "next_seq" not in r.text
            assert (await client.get(f"/sessions/{'0' * 32}", headers=AUTH)).status_code == 404
            assert (await client.get("/sessions/../etc", headers=AUTH)).status_code == 404
            assert (await client.delete(f"/sessions/{sid}", headers=AUTH)).status_code == 200
            assert (await client.get(f"/sessions/{sid}", headers=AUTH)).status_code == 404
            assert (await client.post("/sessions", json={"model": "nope"}, headers=AUTH)).json()["field"] == "model"
        url = server.url.replace("http", "ws") + f"/sessions/{sid}/stream?token=wrong"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 401

    asyncio.run(main())


def test_sessions_survive_kill_9_up_to_the_last_checkpoint(runs, token_file, tmp_path):
    inputs, _, _, scale = held_out(runs["mamba"])
    u = inputs[:40]
    reference = expected(runs["mamba"], u)
    server = Server([runs["mamba"]], tmp_path / "state", token_file, "--checkpoint-every", "5").start()
    with httpx.Client(base_url=server.url, headers=AUTH) as client:
        sid = client.post("/sessions", json={"model": "mamba"}).json()["session"]
        got = [client.post(f"/sessions/{sid}/samples", json={"seq": i, "inputs": u[i].tolist()}).json()["outputs"]
               for i in range(23)]
    server.kill()
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=AUTH) as client:
            status = client.get(f"/sessions/{sid}").json()
            assert status["next_seq"] == status["checkpointed_seq"] == 20
            r = client.post(f"/sessions/{sid}/samples", json={"seq": 23, "inputs": u[23].tolist()})
            assert r.status_code == 409 and r.json()["next_seq"] == 20
            r = client.post(f"/sessions/{sid}/samples", json={"seq": 20, "inputs": u[20:].tolist()})
            assert r.json()["seq"] == 20
            resumed = np.array(r.json()["outputs"])
    finally:
        server.kill()
    assert_close(np.array(got), reference[:23], scale)
    assert_close(resumed, reference[20:], scale)


def test_idle_sessions_expire_and_their_checkpoints_go(runs, tmp_path):
    service = Service([runs["gru"]], TOKEN, tmp_path, checkpoint_every=5, idle_expiry_s=0.05, max_wait_s=0.0)

    async def main():
        opened = await service.open({"model": "gru"})
        assert (tmp_path / f"{opened['session']}.npz").exists()
        expiry = asyncio.create_task(service.expire())
        while service.sessions:
            await asyncio.sleep(0.01)
        expiry.cancel()
        return opened["session"]

    sid = asyncio.run(main())
    assert not (tmp_path / f"{sid}.npz").exists()


def test_serve_refuses_a_short_token_with_one_line(runs, tmp_path):
    (tmp_path / "token").write_text("short")
    result = subprocess.run([sys.executable, "-m", "cellax.cli", "serve", str(runs["gru"]), "--port", "1",
                             "--token-file", str(tmp_path / "token")], capture_output=True, text=True)
    assert result.returncode == 2 and "at least 16 characters" in result.stderr
