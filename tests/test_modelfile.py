"""The Modelfile parser, renderer and create-request conversion.

Table-driven over Ollama's 138 recorded cases (tests/vectors/modelfile_cases.json,
a copy of shared/ollama-vectors: parser_test.go cases plus edge cases recorded by
running Ollama's parser), then Corral's own cases for what Ollama leaves untested.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from toolchain.errors import CorralError
from toolchain.modelfile import (
    Modelfile,
    ModelfileError,
    check,
    expand_path,
    format,
    parse,
    to_create_request,
)

CASES = json.loads((Path(__file__).parent / "vectors" / "modelfile_cases.json").read_text())
ENCODINGS = {"utf-16-le-bom": (b"\xff\xfe", "utf-16-le"), "utf-16-be-bom": (b"\xfe\xff", "utf-16-be")}


def _input(case) -> str | bytes:
    if "encoding" in case:
        bom, codec = ENCODINGS[case["encoding"]]
        return bom + case["input"].encode(codec)
    return case["input"]


def _no_files(path: str) -> bool:
    return False


def test_vectors_file_is_complete():
    assert len(CASES) == 138


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_ollama_modelfile_vector(case):
    data = _input(case)
    if "error" in case:
        with pytest.raises(ModelfileError) as info:
            parse(data)
        err = info.value
        assert str(err) == case["error"]
        assert err.kind == case["error_kind"]
        if case["error_kind"] == "parser_error":
            assert err.message.startswith(f"(line {case['error_line']}): ")
            assert err.detail == case["error"].split("): ", 1)[1]
        if case["error_kind"] != "missing_from":
            assert isinstance(err.line, int) and err.line >= 1
        return

    mf = parse(data)
    assert [list(c) for c in mf.commands] == case["expect"]
    assert format(mf) == case["render"]
    if case.get("roundtrip"):
        assert parse(format(mf)) == mf
    # the same text given as UTF-8 bytes parses the same
    if "encoding" not in case:
        assert parse(case["input"].encode("utf-8")) == mf

    if "create_request" in case:
        assert to_create_request(mf, "/nowhere", exists=_no_files).body() == case["create_request"]
    if "create_error" in case:
        with pytest.raises(ModelfileError) as info:
            to_create_request(mf, "/nowhere", exists=_no_files)
        assert str(info.value) == case["create_error"]


def test_commands_compare_as_plain_tuples():
    mf = parse("FROM x\nPARAMETER stop a\nMESSAGE user hi\n")
    assert mf.commands == (("model", "x"), ("stop", "a"), ("message", "user: hi"))
    assert mf.commands[2].name == "message" and mf.commands[2].args == "user: hi"
    assert mf == Modelfile((("model", "x"), ("stop", "a"), ("message", "user: hi")))


@pytest.mark.parametrize(
    "text, line",
    [
        ("FROM foo\nBAD x\n", 2),
        ("FROM foo\r\nBAD x\r\n", 2),  # Ollama says (line 3): CRLF counted twice
        ("FROM\n", 1),  # Ollama says (line 2)
        ("FROM foo\n\n# c\nPARAMETER num-ctx 1\n", 4),
        ("FROM foo\nSYSTEM \"\"\"abc\nmore\n", 2),  # unterminated quote: where it opened
        ("FROM foo\nMESSAGE tool hi\n", 2),
    ],
)
def test_error_line_is_the_physical_line_of_the_instruction(text, line):
    with pytest.raises(ModelfileError) as info:
        parse(text)
    assert info.value.line == line


def test_errors_are_corral_errors():
    with pytest.raises(CorralError):
        parse("")


def test_lines_of_commands():
    mf = parse('# top\n\nFROM a\nSYSTEM """x\ny"""\r\nPARAMETER top_k 1\r\n')
    assert mf.lines == (3, 4, 6)


@pytest.mark.parametrize(
    "text, expected",
    [
        # comments and blank lines are kept, runs of blanks collapse, leading/trailing blanks go
        ("\n\n# head\nFROM a\n\n\n\n# about params\nPARAMETER top_k 1\n\n", "# head\nFROM a\n\n# about params\nPARAMETER top_k 1\n"),
        ("from a\nparameter stop x\n  # indented\n", "FROM a\nPARAMETER stop x\n# indented\n"),
        ("FROM a\r\n\r\nSYSTEM hi\r\n", "FROM a\n\nSYSTEM hi\n"),
        # values Ollama's own rendering would not read back the same
        ('FROM "  spaced "\n', 'FROM "  spaced "\n'),
        ('FROM a\nSYSTEM """"quoted""""\n', 'FROM a\nSYSTEM """"quoted""""\n'),
        ('FROM a\nSYSTEM "\tx"\n', 'FROM a\nSYSTEM "\tx"\n'),
        ('FROM a\nSYSTEM ""\n', 'FROM a\nSYSTEM ""\n'),
        ('FROM a\nSYSTEM """a\r\nb"""\n', 'FROM a\nSYSTEM "a\r\nb"\n'),
        ('FROM a\nMESSAGE user "  hi"\n', 'FROM a\nMESSAGE user "  hi"\n'),
        ("FROM a\nSYSTEM # not a comment\n", "FROM a\nSYSTEM # not a comment\n"),
    ],
)
def test_format_keeping_comments(text, expected):
    mf = parse(text)
    out = format(mf, keep_comments=True)
    assert out == expected
    assert parse(out) == mf
    assert format(parse(out), keep_comments=True) == out  # idempotent


@pytest.mark.parametrize("case", [c for c in CASES if "expect" in c], ids=lambda c: c["name"])
def test_format_keeping_comments_reads_back_for_every_vector(case):
    mf = parse(_input(case))
    out = format(mf, keep_comments=True)
    assert parse(out) == mf
    assert format(parse(out), keep_comments=True) == out


def test_format_refuses_what_cannot_be_written():
    mf = Modelfile((("model", "a"), ("system", ' x """ y')))
    with pytest.raises(ModelfileError):
        format(mf, keep_comments=True)


# --------------------------------------------------------------------------- create request


def test_from_a_local_file_and_a_name(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "lora").mkdir()
    mf = parse("FROM ./m.gguf\nADAPTER lora\nFROM llama3.2\n")
    req = to_create_request(mf, str(tmp_path))
    assert [p.path for p in req.model_files] == [str(tmp_path / "m.gguf")]
    assert req.model_files[0].written == "./m.gguf" and req.model_files[0].line == 1
    assert [p.path for p in req.adapter_files] == [str(tmp_path / "lora")]
    assert req.from_ == "llama3.2"
    body = req.body(model="mine", files={"m.gguf": "sha256:" + "0" * 64}, adapters={"lora.gguf": "sha256:" + "1" * 64})
    assert body == {
        "model": "mine",
        "from": "llama3.2",
        "files": {"m.gguf": "sha256:" + "0" * 64},
        "adapters": {"lora.gguf": "sha256:" + "1" * 64},
    }


def test_a_missing_path_that_is_no_name_is_a_client_error():
    mf = parse("FROM x\nFROM ./missing.gguf\n")
    with pytest.raises(ModelfileError) as info:
        to_create_request(mf, "/nowhere", exists=_no_files)
    assert "./missing.gguf" in str(info.value) and info.value.line == 2


def test_adapter_must_exist():
    with pytest.raises(ModelfileError) as info:
        to_create_request(parse("FROM x\nADAPTER ./l.gguf\n"), "/nowhere", exists=_no_files)
    assert "ADAPTER ./l.gguf" in str(info.value) and info.value.line == 2


def test_draft_must_not_be_the_model(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelfileError) as info:
        to_create_request(parse("FROM m.gguf\nDRAFT ./m.gguf\n"), str(tmp_path))
    assert str(info.value) == f"DRAFT must not reference the same local path as FROM: {tmp_path / 'm.gguf'}"


def test_parameter_errors_carry_their_line():
    with pytest.raises(ModelfileError) as info:
        to_create_request(parse("FROM x\n\nPARAMETER top_k many\n"), ".", exists=_no_files)
    assert str(info.value) == "invalid int value [many]" and info.value.line == 3


def test_deprecated_parameters_warn():
    req = to_create_request(parse("FROM x\nPARAMETER mirostat 2\n"), ".", exists=_no_files)
    assert req.parameters == {} and req.warnings == [(2, "parameter mirostat is deprecated")]


@pytest.mark.parametrize(
    "version, ok, stored",
    [("0.14.0", True, "0.14.0"), ("v0.14", True, "0.14"), ("1", True, "1"), ("v1.2.3-rc1+b", True, "1.2.3-rc1+b"),
     ("01.2.3", False, None), ("1.2-rc1", False, None), ("latest", False, None), ("1.2.3.4", False, None)],
)
def test_requires_semver(version, ok, stored):
    mf = parse(f"FROM x\nREQUIRES {version}\n")
    if ok:
        assert to_create_request(mf, ".", exists=_no_files).requires == stored
    else:
        with pytest.raises(ModelfileError, match=r"requires must be a valid semver \(e.g. 0.14.0\)"):
            to_create_request(mf, ".", exists=_no_files)


def test_expand_path(tmp_path):
    home = os.path.expanduser("~")
    assert expand_path("/abs/x", "/base") == "/abs/x"
    assert expand_path("rel/../x.gguf", "/base") == "/base/x.gguf"
    assert expand_path("~", "/base") == home
    assert expand_path("~/m.gguf", "/base") == os.path.join(home, "m.gguf")
    with pytest.raises(ModelfileError, match="failed to find user 'no_such_user_corral'"):
        expand_path("~no_such_user_corral/x", "/base")


def test_body_leaves_out_empty_fields():
    req = to_create_request(parse("FROM x\nSYSTEM \"\"\n"), ".", exists=_no_files)
    # Ollama's omitempty: an empty SYSTEM is not sent at all
    assert req.system == ""
    assert req.body() == {"from": "x"}


def test_check_collects_every_problem(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    mf = parse(
        "FROM ./m.gguf\nPARAMETER top_k x\nPARAMETER foo 1\nPARAMETER mirostat 1\n"
        "ADAPTER ./none.gguf\nREQUIRES soon\nPARAMETER temperature 0.3\n"
    )
    result = check(mf, str(tmp_path))
    assert [(e.line, str(e)) for e in result.errors] == [
        (2, "invalid int value [x]"),
        (3, "unknown parameter 'foo'"),
        (5, "ADAPTER ./none.gguf: no such file or directory"),
        (6, "requires must be a valid semver (e.g. 0.14.0)"),
    ]
    assert result.warnings == [(4, "parameter mirostat is deprecated")]
    assert check(parse("FROM ./m.gguf\nPARAMETER top_k 3\n"), str(tmp_path)) == ([], [])


def test_two_spaces_after_parameter_make_an_empty_name():
    # Ollama's parser quirk, kept: the name ends at the first space after PARAMETER.
    mf = parse("FROM a\nPARAMETER  temperature 0.5\n")
    assert mf.commands[1] == ("", "temperature 0.5")
    assert [str(e) for e in check(mf, ".", exists=_no_files).errors] == ["unknown parameter ''"]


def test_blob_references_of_the_old_create_api():
    digest = "sha256:" + "ab" * 32
    req = to_create_request(parse(f"FROM @{digest}\nADAPTER @{digest.upper().replace('SHA256', 'sha256')}\n"), ".",
                            exists=_no_files)
    assert req.model_blobs == [digest] and req.adapter_blobs == [digest]
    assert req.from_ is None and req.model_files == [] and req.body() == {}
    with pytest.raises(ModelfileError):  # a short digest is neither a blob nor a name
        to_create_request(parse("FROM @sha256:abc\n"), ".", exists=_no_files)


def test_parameters_pairs():
    mf = parse("FROM a\nPARAMETER stop x\nSYSTEM s\nPARAMETER top_k 2\nMESSAGE user hi\n")
    assert mf.parameters() == [("stop", "x"), ("top_k", "2")]


def test_random_inputs_never_crash_and_fmt_never_changes_meaning():
    import random

    rng = random.Random(20261125)
    keywords = ["FROM ", "from\t", "PARAMETER stop ", "PARAMETER top_k ", "SYSTEM ", "MESSAGE user ",
                "TEMPLATE ", "LICENSE ", "# ", "  # ", "", "ADAPTER "]
    values = ["x", "a b", " ", "\t", '"', '"""', "'", "#", "é", "\x07", "\ufeff", "\u00a0", "\n", "\r\n", "\r"]
    parsed = 0
    for _ in range(3000):
        lines = [rng.choice(keywords) + "".join(rng.choice(values) for _ in range(rng.randint(0, 5)))
                 for _ in range(rng.randint(1, 5))]
        lines.insert(rng.randint(0, len(lines)), "FROM base")
        text = rng.choice(["\n", "\r\n"]).join(lines)
        try:
            mf = parse(text)
        except ModelfileError:
            continue
        parsed += 1
        format(mf)  # Ollama's rendering never fails
        try:
            out = format(mf, keep_comments=True)
        except ModelfileError:
            continue  # refused rather than written wrong
        assert parse(out) == mf
        assert format(parse(out), keep_comments=True) == out
    assert parsed > 1000  # the generator does reach valid files
