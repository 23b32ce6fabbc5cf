"""Hostile situations at inference time, on a real `stack serve` with real llama.cpp runners:
a GGUF that passes the header check but that llama.cpp cannot load, and a model deleted while
it generates. The failing request fails; the server and the other models keep serving; the store
stays sound."""

from __future__ import annotations

import struct
import threading
import time

import httpx
import ollama
import pytest

from server.fsck import fsck
from tests.adversarial.conftest import SECRET, tree
from tests.support.formats import NEVER_DONE
from tests.support.server import start_server


def broken_at_load(tiny: bytes) -> bytes:
    """The tiny model claiming a third layer whose tensors do not exist: every header check
    passes (sizes, counts, offsets), llama.cpp refuses it at load."""
    key = b"llama.block_count" + struct.pack("<I", 4)
    at = tiny.index(key) + len(key)
    assert struct.unpack("<I", tiny[at:at + 4])[0] == 2
    return tiny[:at] + struct.pack("<I", 3) + tiny[at + 4:]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gguf):
    root = tmp_path_factory.mktemp("runtime")
    bad = root / "broken.gguf"
    bad.write_bytes(broken_at_load(tiny_gguf.read_bytes()))
    (root / "canary").mkdir()
    (root / "canary" / "secret.txt").write_bytes(SECRET)
    with start_server(root / "models", env={"OLLAMA_NUM_PARALLEL": "2"}) as srv:
        client = ollama.Client(host=srv.url)
        client.create(model="good", files={"tiny.gguf": client.create_blob(tiny_gguf)})
        client.create(model="broken", files={"broken.gguf": client.create_blob(bad)})
        outside = tree(root, srv.models)
        yield srv, client
        assert tree(root, srv.models) == outside  # the canary and everything else outside the store


def answers_promptly(srv) -> None:
    started = time.monotonic()
    assert httpx.get(srv.url + "/", timeout=1).text == "Ollama is running"
    assert time.monotonic() - started < 1.0 and srv.proc.poll() is None


def test_a_model_llama_cpp_cannot_load_fails_alone(served):
    srv, client = served
    assert client.generate(model="good", prompt="a", raw=True, options={"num_predict": 2}).done
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "broken", "prompt": "a", "raw": True}, timeout=120)
    assert r.status_code == 500
    message = r.json()["error"]  # 500, as Ollama: the model in the store is at fault, not this request
    assert message.startswith("error loading model: failed to load model "), message
    assert "tensor 'blk.2.attn_norm.weight' not found" in message
    answers_promptly(srv)
    out = client.generate(model="good", prompt="b", raw=True, options={"num_predict": 2})  # still serving
    assert out.done and [m.model for m in client.ps().models] == ["good:latest"]
    assert srv.proc.poll() is None


def test_delete_during_generation(served, tiny_gguf):
    """A generation that does not end by itself is under way when its model is deleted: the delete
    succeeds, the stream goes on (its runner holds the weights), and once the client leaves the
    model is gone and the store sound."""
    srv, client = served
    client.copy("good", "doomed")
    lines: list[str] = []
    started, leave = threading.Event(), threading.Event()

    def stream() -> None:
        body = {"model": "doomed", "prompt": "x", "raw": True, "format": NEVER_DONE,
                "options": {"num_predict": -1, "temperature": 0}}
        with httpx.stream("POST", f"{srv.url}/api/generate", json=body, timeout=120) as r:
            for line in r.iter_lines():
                lines.append(line)
                started.set()
                if leave.is_set():
                    return  # hang up mid-stream

    t = threading.Thread(target=stream)
    t.start()
    try:
        assert started.wait(60)
        r = httpx.request("DELETE", f"{srv.url}/api/delete", json={"model": "doomed"}, timeout=60)
        assert r.status_code == 200
        after_delete = len(lines)
        for _ in range(600):  # bounded: 30 s
            if len(lines) > after_delete + 5 or not t.is_alive():
                break
            time.sleep(0.05)
        assert len(lines) > after_delete + 5, "the stream stopped when its model was deleted"
        assert all('"done":false' in line.replace(" ", "") for line in lines)  # still generating
    finally:
        leave.set()
        t.join(120)
    assert not t.is_alive()
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "doomed", "prompt": "x"}, timeout=60)
    assert (r.status_code, r.json()) == (404, {"error": "model 'doomed' not found"})
    assert client.generate(model="good", prompt="c", raw=True, options={"num_predict": 2}).done
    assert fsck(srv.models).clean
    answers_promptly(srv)
