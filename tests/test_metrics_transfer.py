"""`/metrics` for registry traffic and busy slots, on real `stack serve` processes.

A pull from one server into another counts one successful pull and the model's bytes, as
`pulled` on the puller and `served` on the server it pulled from; a pull of blobs already
present moves no bytes; a failed pull counts as an error; a push counts `pushed` on the pusher
and `received` on the registry. Two generations that never end by themselves hold both slots
of the model (`corral_model_busy_slots` = 2), a third waits in the model's queue
(`corral_model_queue_depth` = 1), and the slots are free again once the clients leave.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.support.server import ServerProcess, start_server
from tests.test_inference_concurrency import NEVER_DONE
from tests.test_registry_e2e import create


def metric(srv: ServerProcess, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in httpx.get(f"{srv.url}/metrics").text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


def until(predicate, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def blob_bytes(srv: ServerProcess, name: str) -> int:
    """Bytes of the blobs (config and layers) the model's manifest names."""
    r = httpx.get(f"{srv.url}/v2/{name}/manifests/latest")
    assert r.status_code == 200, r.text
    manifest = r.json()
    return manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


def pull(srv: ServerProcess, name: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/api/pull", json={"model": name, "insecure": True, "stream": False}, timeout=120)


PULLS = "corral_registry_operations_total"
BYTES = "corral_registry_bytes_total"


def test_pull_and_push_move_the_registry_counters(tmp_path, tiny_gguf):
    with start_server(tmp_path / "a") as a, start_server(tmp_path / "b") as b:
        create(b, "team/bot:latest", tiny_gguf, system="From B.")
        size = blob_bytes(b, "team/bot")
        remote = f"127.0.0.1:{b.port}/team/bot:latest"

        r = pull(a, remote)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        assert metric(a, PULLS, 'operation="pull",outcome="success"') == 1
        assert metric(a, BYTES, 'direction="pulled"') == size
        until(lambda: metric(b, BYTES, 'direction="served"') == size, "B counts the blob bytes it served")

        assert pull(a, remote).status_code == 200  # every blob present: nothing downloaded
        assert metric(a, PULLS, 'operation="pull",outcome="success"') == 2
        assert metric(a, BYTES, 'direction="pulled"') == size

        assert pull(a, f"127.0.0.1:{b.port}/team/absent:latest").status_code == 404
        assert metric(a, PULLS, 'operation="pull",outcome="error"') == 1

        # A pushes a model whose weights B already has: only the blobs B lacks (the system layer) move.
        create(a, "team/other:latest", tiny_gguf, system="From A, a different system prompt.")
        manifest = httpx.get(f"{a.url}/v2/team/other/manifests/latest").json()  # A serves its models too
        on_b = {p.name for p in (b.models / "blobs").iterdir()}
        new = sum(d["size"] for d in [manifest["config"], *manifest["layers"]]
                  if "sha256-" + d["digest"].removeprefix("sha256:") not in on_b)
        assert 0 < new < sum(d["size"] for d in [manifest["config"], *manifest["layers"]])
        target = f"127.0.0.1:{b.port}/team/other:latest"
        assert httpx.post(f"{a.url}/api/copy", json={"source": "team/other:latest", "destination": target}).status_code == 200
        r = httpx.post(f"{a.url}/api/push", json={"model": target, "insecure": True, "stream": False}, timeout=120)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        assert metric(a, PULLS, 'operation="push",outcome="success"') == 1
        assert metric(a, BYTES, 'direction="pushed"') == new
        until(lambda: metric(b, BYTES, 'direction="received"') == new, "B counts the uploaded bytes")


def test_busy_slots_follow_parallel_generations(tmp_path, tiny_gguf):
    env = {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "256"}
    with start_server(tmp_path / "m", env=env) as srv:
        create(srv, "tiny:latest", tiny_gguf)
        label = 'model="tiny:latest"'
        body = {"model": "tiny", "prompt": "hello", "raw": True, "format": NEVER_DONE,
                "options": {"num_predict": -1, "temperature": 0}}
        started = [threading.Event(), threading.Event(), threading.Event()]
        leave = threading.Event()

        def generate(i: int) -> None:
            with httpx.stream("POST", f"{srv.url}/api/generate", json=body, timeout=120) as resp:
                lines = resp.iter_lines()
                assert json.loads(next(lines))["done"] is False
                started[i].set()
                leave.wait(60)  # then leave mid-stream: only a disconnect ends such a generation

        threads = [threading.Thread(target=generate, args=(i,)) for i in range(3)]
        for t in threads[:2]:
            t.start()
        try:
            for e in started[:2]:
                assert e.wait(120), "a generation never started"
            assert metric(srv, "corral_model_busy_slots", label) == 2
            assert metric(srv, "corral_model_parallel_slots", label) == 2
            threads[2].start()  # a third waits for a slot: the model's queue
            until(lambda: metric(srv, "corral_model_queue_depth", label) == 1, "the third request queued")
            assert metric(srv, "corral_queue_depth") == 1 and not started[2].is_set()
        finally:
            leave.set()
            for t in threads:
                if t.ident:  # started
                    t.join(60)
        assert started[2].is_set()  # it got a slot once the others left
        until(lambda: metric(srv, "corral_model_busy_slots", label) == 0, "the slots freed")
        assert metric(srv, "corral_model_queue_depth", label) == 0 and metric(srv, "corral_queue_depth") == 0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
