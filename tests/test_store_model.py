"""Creating and reading models in a store: layer order, inheritance, capabilities, show output."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import store_create
from server.errors import BadRequest
from server.manifest import MEDIA_LICENSE, MEDIA_MESSAGES, MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE
from server.store import Store
from server.store_create import CreateRequest
from server.store_model import load_model, parameters_text, render_modelfile, show
from toolchain.format import human_number
from toolchain.names import parse_name


def write_gguf(path: Path, arch: str, **kv) -> Path:
    """A header-only GGUF (no tensors) with the given extra metadata."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    for key, value in kv.items():
        key = key.replace("__", ".")
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        else:
            w.add_uint32(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def run(store: Store, req: CreateRequest) -> list[str]:
    return [m["status"] for m in store_create.execute(store, store_create.plan(store, req))]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture
def tiny(store, tiny_gguf) -> str:
    return store.write_blob(open(tiny_gguf, "rb")).digest


def media(store: Store, name: str) -> list[str]:
    return [layer.media_type.rsplit(".", 1)[-1] for layer in store.read_manifest(parse_name(name)).layers]


def test_layer_order_and_statuses(store, tiny):
    statuses = run(store, CreateRequest(model="m", files={"m.gguf": tiny}, template="{{ .Prompt }}", system="s",
                                        license=["a", "b"], parameters={"top_k": 1},
                                        messages=[{"role": "user", "content": "hi"}]))
    assert statuses[0] == "parsing GGUF"
    assert statuses[1] == f"using existing layer {tiny}"
    assert all(s.startswith("creating new layer sha256:") for s in statuses[2:8])
    assert statuses[-2:] == ["writing manifest", "success"]
    assert media(store, "m") == ["model", "template", "system", "license", "license", "params", "messages"]


def test_from_inherits_and_overrides(store, tiny):
    run(store, CreateRequest(model="base", files={"m.gguf": tiny}, system="old", parameters={"top_k": 1, "stop": ["a"]},
                             messages=[{"role": "user", "content": "1"}], license=["L"]))
    statuses = run(store, CreateRequest(model="child", from_="BASE", system="new", parameters={"top_k": 2}))
    assert "parsing GGUF" not in statuses
    child = load_model(store, parse_name("child"))
    assert child.system == "new"
    assert child.params == {"stop": ["a"], "top_k": 2}  # request wins per key
    assert child.messages == [{"role": "user", "content": "1"}]  # kept: none given
    assert child.license == ["L"]
    assert child.parent_model == "base:latest"
    assert [layer.from_ for layer in child.manifest.layers if layer.media_type == MEDIA_MODEL] == ["base:latest"]
    run(store, CreateRequest(model="child2", from_="child", messages=[{"role": "assistant", "content": "2"}]))
    assert load_model(store, parse_name("child2")).messages == [{"role": "assistant", "content": "2"}]
    assert media(store, "child2") == ["model", "license", "system", "params", "messages"]


def test_recreate_prunes_replaced_layers(store, tiny):
    run(store, CreateRequest(model="m", files={"m.gguf": tiny}, system="first"))
    first = load_model(store, parse_name("m")).manifest
    run(store, CreateRequest(model="m", files={"m.gguf": tiny}, system="second"))
    system_first = next(d for d in first.layers if d.media_type == MEDIA_SYSTEM)
    assert not store.has_blob(system_first.digest)
    assert store.has_blob(tiny) and store.has_blob(first.config.digest)  # the config is the same blob


def test_legacy_modelfile_blob_references(store, tiny):
    req, statuses = store_create.from_modelfile("m", f"FROM @{tiny}\nTEMPLATE {{{{ .Prompt }}}}\nPARAMETER stop x")
    assert statuses == ["parsing modelfile"] and req.files == {"": tiny}
    assert run(store, req)[-1] == "success"
    model = load_model(store, parse_name("m"))
    assert model.parent_model == "" and model.params == {"stop": ["x"]}
    with pytest.raises(BadRequest, match="line 2"):
        store_create.from_modelfile("m", f"FROM @{tiny}\nFOO bar")


@pytest.mark.parametrize(
    "arch, kv, template, expected",
    [
        ("llama", {}, None, ["completion"]),
        ("bert", {"bert__pooling_type": 1}, None, ["embedding"]),
        ("llama", {"tokenizer__chat_template": "{% if tools %}{{ tool_call }}{% endif %}"}, None, ["completion", "tools"]),
        ("qwen3", {"tokenizer__chat_template": "<think>x</think>"}, None, ["completion", "thinking"]),
        ("gemma3", {"gemma3__vision__block_count": 2}, None, ["completion", "vision"]),
        ("llama", {}, "{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}", ["completion", "tools"]),
        ("llama", {}, "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>", ["completion", "insert"]),
        ("llama", {}, "{{ range .Messages }}{{ .Content }}<think>{{ .Thinking }}</think>{{ end }}",
         ["completion", "thinking"]),
        ("llama", {}, "{{ range .Messages }}{{ if .Thinking }}[THINK]{{ .Thinking }}[/THINK]{{ end }}{{ end }}",
         ["completion", "thinking"]),  # any tags Ollama's inference finds
        ("llama", {}, "{{ if .Thinking }}[THINK]{{ .Thinking }}[/THINK]{{ end }}", ["completion"]),
    ],
)
def test_capabilities(store, tmp_path, arch, kv, template, expected):
    d = store.write_blob(open(write_gguf(tmp_path / "m.gguf", arch, **kv), "rb")).digest
    run(store, CreateRequest(model="m", files={"m.gguf": d}, template=template or ""))
    assert load_model(store, parse_name("m")).capabilities(store) == expected


def test_show_and_modelfile(store, tiny):
    run(store, CreateRequest(model="m", files={"m.gguf": tiny}, template="{{ .System }}\n{{ .Prompt }}",
                             system=" padded ", parameters={"stop": ["<a>", "<b>"], "temperature": 0.7,
                                                           "num_ctx": 4096, "use_mmap": False},
                             messages=[{"role": "user", "content": "hi there"}]))
    model = load_model(store, parse_name("m"))
    text = render_modelfile(model, store)
    blob = store.blob_path(tiny)
    assert text == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM m:latest\n\n"
        f"FROM {blob}\n"
        'TEMPLATE "{{ .System }}\n{{ .Prompt }}"\n'
        'SYSTEM " padded "\n'
        "PARAMETER num_ctx 4096\n"
        "PARAMETER stop <a>\n"
        "PARAMETER stop <b>\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER use_mmap false\n"
        "MESSAGE user hi there\n"
    )
    assert parameters_text(model.params).splitlines() == [
        "num_ctx                        4096",
        'stop                           "<a>"',
        'stop                           "<b>"',
        "temperature                    0.7",
        "use_mmap                       false",
    ]
    body = show(model, store)
    assert list(body)[:5] == ["modelfile", "parameters", "template", "system", "details"]
    assert "license" not in body and body["model_info"]["general.architecture"] == "llama"


@pytest.mark.parametrize("n, expected", [(8_030_261_248, "8.0B"), (7_000_000_000, "7B"), (136_727_040, "136.73M"),
                                          (268_098_176, "268.10M"), (123_584, "124K"), (999, "999")])
def test_human_number(n, expected):
    assert human_number(n) == expected


def test_media_types_are_ollamas():
    assert (MEDIA_TEMPLATE, MEDIA_SYSTEM, MEDIA_PARAMS, MEDIA_LICENSE, MEDIA_MESSAGES) == tuple(
        f"application/vnd.ollama.image.{t}" for t in ("template", "system", "params", "license", "messages")
    )


def test_non_causal_model_embeds(store, tmp_path):
    path = write_gguf(tmp_path / "enc.gguf", "nomic-bert", **{"nomic-bert__attention__causal": False})
    d = store.write_blob(open(path, "rb")).digest
    run(store, CreateRequest(model="enc", files={"enc.gguf": d}))
    assert load_model(store, parse_name("enc")).capabilities(store) == ["embedding"]


def test_projector_file_becomes_a_projector_layer(store, tiny, tmp_path):
    proj = store.write_blob(open(write_gguf(tmp_path / "mmproj.gguf", "clip", general__type="mmproj"), "rb")).digest
    run(store, CreateRequest(model="vl", files={"model.gguf": tiny, "mmproj.gguf": proj}))
    model = load_model(store, parse_name("vl"))
    assert media(store, "vl") == ["projector", "model"]  # files are taken in name order, as Ollama does
    assert model.capabilities(store) == ["completion", "vision"]
    assert render_modelfile(model, store).count("\nFROM ") == 2
    assert show(model, store)["projector_info"]["general.architecture"] == "clip"
