"""`stack run`, `stack ps`, `stack stop`: output formats (tables of cases) and the REPL's commands."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from toolchain.cli.run_cmd import go_duration, human_until, parameter_value, ps_table, summary


@pytest.mark.parametrize(
    "ns, text",
    [(0, "0s"), (5_026_000, "5.026ms"), (5_043_500_667, "5.043500667s"), (325_953_000, "325.953ms"),
     (90_000_000_000, "1m30s"), (1500, "1.5\u00b5s"), (999, "999ns")],
)
def test_go_duration(ns, text):
    assert go_duration(ns) == text


NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "delta, text",
    [(timedelta(minutes=4, seconds=30), "4 minutes from now"), (timedelta(seconds=-1), "Stopping..."),
     (timedelta(days=365 * 200), "Forever"), (timedelta(seconds=30), "30 seconds from now"),
     (timedelta(minutes=1, seconds=5), "About a minute from now"), (timedelta(hours=3), "3 hours from now")],
)
def test_until(delta, text):
    assert human_until(NOW + delta, NOW) == text


def test_ps_table_columns_and_padding():
    models = [
        {"name": "gemma3:270m", "digest": "a80c4f17acd5" + "0" * 52, "size": 300_000_000, "size_vram": 0,
         "context_length": 4096, "expires_at": "2026-01-01T00:04:30.123456789Z"},
        {"name": "tiny:latest", "digest": "b" * 64, "size": 2_000_000, "size_vram": 0, "context_length": 2048,
         "expires_at": "2318-04-11T23:47:16.854775807Z"},
    ]
    assert ps_table(models, NOW).splitlines() == [
        "NAME           ID              SIZE      PROCESSOR    CONTEXT    UNTIL",
        "gemma3:270m    a80c4f17acd5    300 MB    100% CPU     4096       4 minutes from now",
        "tiny:latest    bbbbbbbbbbbb    2 MB      100% CPU     2048       Forever",
    ]


def test_ps_table_without_models_is_the_header():
    assert ps_table([]) == "NAME    ID    SIZE    PROCESSOR    CONTEXT    UNTIL"


@pytest.mark.parametrize(
    "name, values, typed",
    [("temperature", ["0.2"], 0.2), ("num_ctx", ["8192"], 8192), ("stop", ["<a>", "<b>"], ["<a>", "<b>"]),
     ("use_mmap", ["false"], False), ("seed", ["-1"], -1)],
)
def test_set_parameter_types(name, values, typed):
    assert parameter_value(name, values) == typed


@pytest.mark.parametrize(
    "name, values, message",
    [("num_ctx", ["big"], "invalid int value [big]"), ("top_p", ["x"], "invalid float value [x]"),
     ("nonsense", ["1"], "unknown parameter 'nonsense'")],
)
def test_set_parameter_errors(name, values, message):
    with pytest.raises(ValueError) as info:
        parameter_value(name, values)
    assert str(info.value) == message


def test_verbose_summary_lines():
    final = {"total_duration": 5_043_500_667, "load_duration": 5_026_000, "prompt_eval_count": 26,
             "prompt_eval_duration": 325_953_000, "eval_count": 290, "eval_duration": 4_709_213_000}
    assert summary(final).splitlines() == [
        "total duration:       5.043500667s",
        "load duration:        5.026ms",
        "prompt eval count:    26 token(s)",
        "prompt eval duration: 325.953ms",
        "prompt eval rate:     79.77 tokens/s",
        "eval count:           290 token(s)",
        "eval duration:        4.709213s",
        "eval rate:            61.58 tokens/s",
    ]


# -- against a real `stack serve` (tiny model) --------------------------------------------------

import hashlib  # noqa: E402
import json  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pty  # noqa: E402
import select  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from tests.support.cli import run_stack  # noqa: E402
from tests.support.server import REPO_ROOT, start_server  # noqa: E402
from toolchain.cli.run_cmd import Session  # noqa: E402
from toolchain.client import Client  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_gguf):
    with start_server(tmp_path_factory.mktemp("models"), env={"OLLAMA_NUM_PARALLEL": "1"}) as srv:
        from gguf import PoolingType

        from tests.support.tiny_gguf import write_tiny_llama

        embedder = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "embed.gguf", pooling_type=PoolingType.MEAN)
        with Client(srv.url) as client:
            for name, path, extra in (("tiny", tiny_gguf, {"system": "model system", "parameters": {
                    "temperature": 0, "num_predict": 4}}), ("tiny-embed", embedder, {})):
                data = path.read_bytes()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                client.create_blob(digest, data)
                for _ in client.create({"model": name, "files": {"m.gguf": digest}, **extra}):
                    pass
        yield srv


def stack(srv, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_stack(*args, env={"OLLAMA_HOST": srv.host_env}, stdin=stdin)


def test_run_one_shot_ps_and_stop(server):
    done = stack(server, "run", "tiny", "hello", "world", "--verbose")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n") and "eval count:" in done.stderr and "total duration:" in done.stderr
    ps = stack(server, "ps")
    assert ps.returncode == 0
    header, row = ps.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.startswith("tiny:latest") and "100% CPU" in row and "minutes from now" in row
    stop = stack(server, "stop", "tiny")
    assert stop.returncode == 0 and stop.stdout == ""
    for _ in range(200):
        if "tiny:latest" not in stack(server, "ps").stdout:
            break
    assert "tiny:latest" not in stack(server, "ps").stdout


def test_run_reads_piped_stdin(server):
    done = stack(server, "run", "tiny", stdin="the sky is blue\n")
    assert done.returncode == 0 and done.stderr == ""


def test_run_an_embedding_model_prints_the_vector(server):
    done = stack(server, "run", "tiny-embed", "the sky is blue")
    assert done.returncode == 0, done.stderr
    vector = json.loads(done.stdout)
    assert len(vector) == 64 and all(isinstance(v, float) for v in vector)
    done = stack(server, "run", "tiny-embed", stdin="")
    assert done.returncode == 1
    assert done.stderr == 'Error: embedding models require input text. Usage: stack run tiny-embed "your text here"\n'


def test_run_pulls_a_missing_model_first(server):
    # this server is also a registry: pull its own tiny model under a registry name, then run it
    name = f"{server.host_env}/library/tiny:latest"
    done = stack(server, "run", "--insecure", name, "hello")
    assert done.returncode == 0, done.stderr
    assert "success" in done.stderr and done.stdout.endswith("\n")
    assert any(m["name"] == name for m in Client(server.url).tags())


def test_errors_are_one_line(server):
    done = stack(server, "run", "--insecure", f"{server.host_env}/library/nope:latest", "hi")
    assert done.returncode == 1 and done.stderr.endswith("\nError: pull model manifest: file does not exist\n")
    done = stack(server, "stop", "nope")
    assert done.returncode == 1 and done.stderr == 'Error: couldn\'t find model "nope" to stop\n'


def session(server) -> tuple[Session, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Session(Client(server.url), "tiny", out=out, err=err), out, err


def test_session_commands(server):
    s, out, err = session(server)
    assert s.handle("/set parameter num_predict 2")
    assert out.getvalue() == "Set parameter 'num_predict' to '2'\n"
    s.handle("/set parameter num_predict lots")
    assert out.getvalue().endswith('Couldn\'t set parameter: "invalid int value [lots]"\n')
    s.handle("/set parameter")
    assert "Available Parameters:" in err.getvalue()
    s.handle("/show system")
    assert out.getvalue().endswith("model system\n")
    s.handle("/set system You are terse.")
    s.handle("/show system")
    assert out.getvalue().endswith("Set system message.\nYou are terse.\n")
    s.handle("/show parameters")
    assert "User defined parameters:" in out.getvalue() and "num_predict" in out.getvalue()
    s.handle("/nonsense")
    assert out.getvalue().endswith("Unknown command '/nonsense'. Type /? for help\n")
    s.handle("/?")
    assert "/bye" in err.getvalue()
    assert s.handle("/bye") is False


def test_session_chat_history_multiline_clear_and_save(server):
    s, out, _ = session(server)
    s.handle("hello there")
    assert [m["role"] for m in s.messages] == ["user", "assistant"]
    assert s.handle('"""first line') and s.prompt == "... "
    s.handle("second line")
    s.handle('end"""')
    assert s.prompt == ">>> "
    assert s.messages[2] == {"role": "user", "content": "first line\nsecond line\nend"}
    s.handle('"""one line"""')
    assert s.messages[-2]["content"] == "one line"
    s.handle("/set system keep me")
    s.handle("/clear")
    assert out.getvalue().endswith("Cleared session context\n")
    assert s.messages == [{"role": "system", "content": "keep me"}]
    s.handle("a question")
    s.handle("/save tiny-saved")
    assert out.getvalue().endswith("Created new model 'tiny-saved'\n")
    shown = Client(server.url).show("tiny-saved")
    assert shown["system"] == "keep me"
    s.handle("/save bad name")
    assert out.getvalue().endswith("Usage:\n  /save <modelname>\n")
    s.handle("/save bad!name")
    assert out.getvalue().endswith("error: The model name 'bad!name' is invalid\n")
    s.handle("/load nope")
    assert out.getvalue().endswith("Couldn't find model 'nope'\n")
    s.handle("/load tiny-saved")
    assert out.getvalue().endswith("Loading model 'tiny-saved'\n") and s.messages == [] and s.model == "tiny-saved"


def test_interactive_run_on_a_terminal(server):
    """`stack run MODEL` with a terminal: prompt, an answer, /bye."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on the pty
        os.chdir(REPO_ROOT)
        os.environ["OLLAMA_HOST"] = server.host_env
        os.execv(sys.executable, [sys.executable, "-m", "toolchain.cli", "run", "tiny"])
    transcript = b""

    def read_until(marker: bytes, count: int = 1) -> None:
        nonlocal transcript
        for _ in range(600):
            if transcript.count(marker) >= count:
                return
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    transcript += os.read(fd, 4096)
                except OSError:
                    return
        raise AssertionError(f"no {marker!r} in {transcript!r}")

    try:
        read_until(b">>> ")
        os.write(fd, b"hello\n")
        read_until(b">>> ", 2)
        os.write(fd, b"/bye\n")
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
