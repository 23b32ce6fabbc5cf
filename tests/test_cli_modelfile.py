"""`stack modelfile fmt|check` through the real CLI entry point."""

from __future__ import annotations

import io
import os
import sys

import pytest

from toolchain.cli import main

MESSY = "# base model\nfrom   llama3.2\n\n\n\nparameter temperature    0.5\nSystem \"\"\"You are\nhelpful.\"\"\"\n"
CANONICAL = "# base model\nFROM llama3.2\n\nPARAMETER temperature 0.5\nSYSTEM \"You are\nhelpful.\"\n"


@pytest.fixture
def stdin(monkeypatch):
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    return feed


def test_fmt_rewrites_in_place_keeping_comments_and_mode(tmp_path, capsys):
    mf = tmp_path / "Modelfile"
    mf.write_text(MESSY)
    os.chmod(mf, 0o640)
    assert main(["modelfile", "fmt", str(mf)]) == 0
    assert mf.read_text() == CANONICAL
    assert os.stat(mf).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile"]  # no temp file left
    before = os.stat(mf).st_mtime_ns
    assert main(["modelfile", "fmt", str(mf)]) == 0  # already formatted: untouched
    assert os.stat(mf).st_mtime_ns == before
    assert capsys.readouterr().out == ""


def test_fmt_check_lists_files_that_would_change(tmp_path, capsys):
    messy, clean = tmp_path / "a.Modelfile", tmp_path / "b.Modelfile"
    messy.write_text(MESSY)
    clean.write_text(CANONICAL)
    assert main(["modelfile", "fmt", "--check", str(messy), str(clean)]) == 1
    assert capsys.readouterr().out.splitlines() == [str(messy)]
    assert messy.read_text() == MESSY  # nothing written
    assert main(["modelfile", "fmt", "--check", str(clean)]) == 0


def test_fmt_normalises_crlf_and_utf16(tmp_path):
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b"FROM a\r\nSYSTEM hi\r\n")
    utf16 = tmp_path / "utf16"
    utf16.write_bytes(b"\xff\xfe" + "FROM b\n".encode("utf-16-le"))
    assert main(["modelfile", "fmt", str(crlf), str(utf16)]) == 0
    assert crlf.read_bytes() == b"FROM a\nSYSTEM hi\n"
    assert utf16.read_bytes() == b"FROM b\n"


def test_fmt_stdin_to_stdout(stdin, capsys):
    stdin(MESSY.encode())
    assert main(["modelfile", "fmt", "-"]) == 0
    assert capsys.readouterr().out == CANONICAL


def test_fmt_reports_parse_errors_and_leaves_the_file(tmp_path, capsys):
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.write_text("FROM a\nSYSTEM ok\nBOGUS x\n")
    good.write_text("from b\n")
    assert main(["modelfile", "fmt", str(bad), str(good)]) == 1
    err = capsys.readouterr().err
    assert err == f'{bad}:3: command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter", "message", or "requires"\n'
    assert bad.read_text() == "FROM a\nSYSTEM ok\nBOGUS x\n"
    assert good.read_text() == "FROM b\n"  # the other files are still formatted


def test_fmt_missing_file(tmp_path, capsys):
    assert main(["modelfile", "fmt", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'nope'}: No such file or directory\n"


def test_check_ok(tmp_path, capsys):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./m.gguf\nPARAMETER stop a\nPARAMETER num_ctx 2048\nREQUIRES 0.14\n")
    assert main(["modelfile", "check", str(mf)]) == 0
    assert capsys.readouterr().out == ""


def test_check_reports_every_problem_with_its_line(tmp_path, capsys):
    mf = tmp_path / "Modelfile"
    mf.write_text(
        "FROM llama3.2\n# tuning\nPARAMETER temperature hot\nPARAMETER mirostat 1\n"
        "PARAMETER foo 1\nADAPTER ./lora.gguf\n"
    )
    other = tmp_path / "Other"
    other.write_text("PARAMETER top_k 1\n")
    assert main(["modelfile", "check", str(mf), str(other)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{mf}:3: invalid float value [hot]",
        f"{mf}:5: unknown parameter 'foo'",
        f"{mf}:6: ADAPTER ./lora.gguf: no such file or directory",
        f"{other}: no FROM line",
    ]
    assert captured.err == f"{mf}:4: warning: parameter mirostat is deprecated\n"


def test_check_parse_error_and_missing_file(tmp_path, capsys):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM a\nPARAMETER num-ctx 1\n")
    assert main(["modelfile", "check", str(mf), str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{mf}:2: unexpected EOF: num",
        f"{tmp_path / 'nope'}: No such file or directory",
    ]


def test_check_stdin(stdin, capsys):
    stdin(b"FROM a\nMESSAGE tool hi\n")
    assert main(["modelfile", "check", "-"]) == 1
    assert capsys.readouterr().out == '-:2: message role must be one of "system", "user", or "assistant"\n'


def test_usage_errors_are_nonzero(capsys):
    assert main(["modelfile", "fmt"]) != 0
    assert main(["modelfile", "nope"]) != 0
