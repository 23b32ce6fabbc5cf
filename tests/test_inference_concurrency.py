"""Concurrency through a real uvicorn: client disconnects, parallel slots, the queue limit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time

import httpx
import orjson
import pytest

from server.scheduler import QUEUE_FULL
from tests.support.formats import NEVER_DONE
from tests.support.inference_app import make_app, serve_in_thread

ENDLESS = {"num_predict": -1, "temperature": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gguf):
    app = make_app(tmp_path_factory.mktemp("models"), OLLAMA_NUM_PARALLEL="2", OLLAMA_CONTEXT_LENGTH="256",
                   OLLAMA_MAX_QUEUE="2")
    with serve_in_thread(app) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            data = tiny_gguf.read_bytes()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            for name in ("tiny",):
                client.post(f"/api/blobs/{digest}", content=data).raise_for_status()
                r = client.post("/api/create", json={"model": name, "files": {"t.gguf": digest}, "stream": False})
                assert r.json()["status"] == "success"
            yield client, app


def runner_of(app, name):
    for ref, _spec, _exp, runner in app.state.engine.scheduler.running():
        if ref.name == name:
            return runner
    return None


def wait_until(predicate, attempts=1000):
    for _ in range(attempts):
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_disconnect_mid_stream_stops_the_generation_and_frees_the_slot(served):
    client, app = served
    body = {"model": "tiny", "prompt": "hello", "raw": True, "options": ENDLESS, "format": NEVER_DONE}
    for _ in range(2):  # twice: a freed slot is usable again
        with client.stream("POST", "/api/generate", json=body) as resp:
            lines = resp.iter_lines()
            first = [orjson.loads(next(lines)) for _ in range(3)]
            assert all(c["done"] is False for c in first)
            runner = runner_of(app, "tiny:latest")
            assert runner.active_requests == 1
        # the generation never ends by itself: only the disconnect can stop it
        assert wait_until(lambda: runner.active_requests == 0)
        assert wait_until(lambda: app.state.engine.scheduler.pending == 0)


def test_parallel_requests_share_one_runner(served):
    client, app = served

    async def main():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=120) as ac:
            reqs = [ac.post("/api/generate", json={"model": "tiny", "prompt": f"hello {i}", "raw": True,
                                                   "stream": False, "options": {"num_predict": 8, "seed": i}})
                    for i in range(4)]
            return await asyncio.gather(*reqs)

    results = asyncio.run(main())
    assert all(r.status_code == 200 and r.json()["done"] for r in results)
    assert len([r for r in app.state.engine.scheduler.running() if r[0].name == "tiny:latest"]) == 1


def test_queue_limit_applies_to_a_loaded_model_and_answers_503(served):
    client, app = served
    body = {"model": "tiny", "prompt": "hello", "raw": True, "options": ENDLESS, "format": NEVER_DONE}
    streams = []
    try:
        # two endless streams hold both slots
        for _ in range(2):
            cm = client.stream("POST", "/api/generate", json=body)
            resp = cm.__enter__()
            lines = resp.iter_lines()  # kept: dropping the iterator would close the response
            next(lines)
            streams.append((cm, lines))
        scheduler = app.state.engine.scheduler

        async def waiter():
            async with httpx.AsyncClient(base_url=str(client.base_url), timeout=120) as ac:
                return await ac.post("/api/generate", json={**body, "stream": False, "format": None,
                                                            "options": {"num_predict": 1}})

        results = []
        threads = [threading.Thread(target=lambda: results.append(asyncio.run(waiter()))) for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: scheduler.pending == 2)  # OLLAMA_MAX_QUEUE=2 waiters
        resp = client.post("/api/generate", json={**body, "stream": False})
        assert (resp.status_code, resp.json()) == (503, {"error": QUEUE_FULL})
    finally:
        for cm, _lines in streams:
            cm.__exit__(None, None, None)
    for t in threads:
        t.join(120)
    assert [r.status_code for r in results] == [200, 200]


def test_disconnect_while_waiting_for_a_non_streamed_answer_stops_the_generation(served):
    client, app = served
    body = {"model": "tiny", "prompt": "hello", "raw": True, "stream": False, "options": ENDLESS,
            "format": NEVER_DONE}
    client.post("/api/generate", json={"model": "tiny", "stream": False})  # loaded
    runner = runner_of(app, "tiny:latest")
    with httpx.Client(base_url=str(client.base_url), timeout=httpx.Timeout(120, read=0.5)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/api/generate", json=body)
    assert wait_until(lambda: runner.active_requests == 0)
    assert wait_until(lambda: app.state.engine.scheduler.pending == 0)
    r = client.post("/api/generate", json={**body, "format": None, "options": {"num_predict": 2}})
    assert r.status_code == 200 and r.json()["done"]


def test_a_runner_crash_mid_stream_ends_the_stream_with_an_error_line_and_the_next_request_reloads(served):
    client, app = served
    body = {"model": "tiny", "prompt": "hello", "raw": True, "options": ENDLESS, "format": NEVER_DONE}
    with client.stream("POST", "/api/generate", json=body) as resp:
        lines = resp.iter_lines()
        assert orjson.loads(next(lines))["done"] is False
        runner = runner_of(app, "tiny:latest")
        os.kill(runner.pid, signal.SIGKILL)
        rest = [orjson.loads(line) for line in lines if line.strip()]
    assert resp.status_code == 200
    assert "error" in rest[-1] and rest[-1]["error"].startswith("model runner has unexpectedly stopped")
    r = client.post("/api/generate", json={"model": "tiny", "prompt": "hello", "raw": True, "stream": False,
                                          "options": {"num_predict": 2}})
    assert r.status_code == 200 and r.json()["done"] is True
    assert runner_of(app, "tiny:latest") is not runner


def test_a_client_that_leaves_while_queued_gives_up_its_place(served):
    client, app = served
    scheduler = app.state.engine.scheduler
    body = {"model": "tiny", "prompt": "hello", "raw": True, "options": ENDLESS, "format": NEVER_DONE}
    streams = []
    try:
        for _ in range(2):  # both slots busy
            cm = client.stream("POST", "/api/generate", json=body)
            lines = cm.__enter__().iter_lines()
            next(lines)
            streams.append((cm, lines))
        with httpx.Client(base_url=str(client.base_url), timeout=httpx.Timeout(120, read=0.5)) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                impatient.post("/api/generate", json=body)
        assert wait_until(lambda: scheduler.pending == 0)  # not waiting for a slot any more
    finally:
        for cm, _lines in streams:
            cm.__exit__(None, None, None)
    runner = runner_of(app, "tiny:latest")
    assert wait_until(lambda: runner.active_requests == 0)  # and it never started generating
