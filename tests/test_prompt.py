"""Prompt building: Ollama's template.Execute modes, collation, truncation, generate rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from toolchain.prompt import (
    PromptError,
    Values,
    build_chat_prompt,
    chat_messages,
    chat_prompt,
    collate,
    cut_after_response,
    execute,
    generate_prompt,
    load_template,
)
from toolchain.template import TemplateError, parse


def words(text: str) -> int:
    """Ollama's test tokenizer: one token per whitespace-separated field."""
    return len(text.split())


# -- Ollama's TestExecuteWithMessages: legacy and messages templates give the same prompt ----------

MISTRAL_LEGACY = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] "
MISTRAL_LEGACY_RESPONSE = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] {{ .Response }}"
MISTRAL_MESSAGES = (
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
    '{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role "assistant" }}{{ .Content }}[INST] {{ end }}\n{{- end }}'
)
CHATML_LEGACY = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)
CHATML_MESSAGES = "\n{{- range $index, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"

EXECUTE_CASES = [
    (
        "mistral",
        [MISTRAL_LEGACY, MISTRAL_LEGACY_RESPONSE, MISTRAL_MESSAGES],
        [
            {"role": "user", "content": "Hello friend!"},
            {"role": "assistant", "content": "Hello human!"},
            {"role": "user", "content": "What is your name?"},
        ],
        "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] ",
    ),
    (
        "mistral system",
        [MISTRAL_LEGACY, MISTRAL_LEGACY_RESPONSE, MISTRAL_MESSAGES],
        [
            {"role": "system", "content": "You are a helpful assistant!"},
            {"role": "user", "content": "Hello friend!"},
            {"role": "assistant", "content": "Hello human!"},
            {"role": "user", "content": "What is your name?"},
        ],
        "[INST] You are a helpful assistant!\n\nHello friend![/INST] Hello human![INST] What is your name?[/INST] ",
    ),
    (
        "mistral assistant continues",
        [
            "[INST] {{ .Prompt }}[/INST] ",
            "[INST] {{ .Prompt }}[/INST] {{ .Response }}",
            '\n{{- range $i, $m := .Messages }}\n{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST] {{ else if eq .Role "assistant" }}{{ .Content }}{{ end }}\n{{- end }}',
        ],
        [
            {"role": "user", "content": "Hello friend!"},
            {"role": "assistant", "content": "Hello human!"},
            {"role": "user", "content": "What is your name?"},
            {"role": "assistant", "content": "My name is Ollama and I"},
        ],
        "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is Ollama and I",
    ),
    (
        "chatml",
        [CHATML_LEGACY, CHATML_MESSAGES],
        [
            {"role": "system", "content": "You are a helpful assistant!"},
            {"role": "user", "content": "Hello friend!"},
            {"role": "assistant", "content": "Hello human!"},
            {"role": "user", "content": "What is your name?"},
        ],
        "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n<|im_start|>user\nHello friend!<|im_end|>\n"
        "<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\nWhat is your name?<|im_end|>\n<|im_start|>assistant\n",
    ),
]


@pytest.mark.parametrize("name,templates,messages,expect", EXECUTE_CASES, ids=[c[0] for c in EXECUTE_CASES])
def test_execute_legacy_and_messages_agree(name, templates, messages, expect):
    for src in templates:
        assert execute(src, Values(messages=messages)) == expect, src


def test_suffix_mode():
    src = "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}"
    assert execute(src, Values(messages=[{"role": "user", "content": "hello"}])) == "hello"
    assert execute(src, Values(prompt="def add(", suffix="return x")) == "<PRE> def add( <SUF>return x <MID>"


def test_default_template_and_response_appended():
    assert execute(None, Values(messages=[{"role": "user", "content": "hi"}])) == "hi"
    assert execute("", Values(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])) == "hi"
    # legacy templates get {{ .Response }} so a trailing assistant message is continued
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert execute("{{ .Prompt }}|", Values(messages=msgs)) == "Q|A"
    assert [type(n).__name__ for n in load_template("{{ .Prompt }}").root.nodes] == ["ActionNode", "ActionNode"]
    assert len(load_template("{{ range .Messages }}{{ end }}").root.nodes) == 1


def test_messages_template_sees_missing_legacy_fields_as_no_value():
    assert execute("{{ range .Messages }}{{ end }}{{ .Prompt }}", Values(messages=[{"role": "user", "content": "x"}])) == "<no value>"


def test_think_values():
    src = "{{ range .Messages }}{{ end }}{{ .Think }}/{{ .ThinkLevel }}/{{ .IsThinkSet }}"
    msgs = [{"role": "user", "content": "x"}]
    assert execute(src, Values(messages=msgs)) == "false//false"
    assert execute(src, Values(messages=msgs, think=True)) == "true/medium/true"
    assert execute(src, Values(messages=msgs, think=False)) == "false//true"
    assert execute(src, Values(messages=msgs, think="high")) == "true/high/true"


COLLATE_CASES = [
    ("consecutive user merged", [("user", "Hello"), ("user", "How are you?")], "", [("user", "Hello\n\nHow are you?")]),
    ("tool messages kept apart", [("tool", "sunny"), ("tool", "72F")], "", [("tool", "sunny"), ("tool", "72F")]),
    (
        "systems joined and kept",
        [("system", "A"), ("system", "B"), ("user", "u"), ("system", "C")],
        "A\n\nB\n\nC",
        [("system", "A\n\nB"), ("user", "u"), ("system", "C")],
    ),
    (
        "mixed",
        [("system", "You are helpful"), ("user", "Hello"), ("assistant", "Hi"), ("tool", "t1"), ("tool", "t2"), ("user", "Thanks")],
        "You are helpful",
        [("system", "You are helpful"), ("user", "Hello"), ("assistant", "Hi"), ("tool", "t1"), ("tool", "t2"), ("user", "Thanks")],
    ),
]


@pytest.mark.parametrize("name,msgs,system,expect", COLLATE_CASES, ids=[c[0] for c in COLLATE_CASES])
def test_collate(name, msgs, system, expect):
    raw = [{"role": r, "content": c} for r, c in msgs]
    before = json.dumps(raw)
    got_system, got = collate(raw)
    assert got_system == system
    assert [(m["role"], m["content"]) for m in got] == expect
    assert json.dumps(raw) == before  # inputs untouched


def test_cut_after_response_matches_ollama():
    tmpl = parse("A{{ .Prompt }}B{{ if .X }}C{{ .Response }}D{{ else }}E{{ end }}F{{ .Response }}")
    cut = cut_after_response(tmpl.root)
    assert tmpl.execute({"Prompt": "p", "Response": "r", "X": 1}, root=cut) == "ApBCr"
    assert tmpl.execute({"Prompt": "p", "Response": "r", "X": 0}, root=cut) == "ApB"
    # the original tree is untouched
    assert tmpl.execute({"Prompt": "p", "Response": "r", "X": 1}) == "ApBCrDFr"


# -- Ollama's TestChatPrompt ---------------------------------------------------------------------

LEGACY = "\n{{- if .System }}{{ .System }} {{ end }}\n{{- if .Prompt }}{{ .Prompt }} {{ end }}\n{{- if .Response }}{{ .Response }} {{ end }}"
HARRY = [
    {"role": "user", "content": "You're a test, Harry!"},
    {"role": "assistant", "content": "I-I'm a what?"},
    {"role": "user", "content": "A test. And a thumping good one at that, I'd wager."},
]
LAST = "A test. And a thumping good one at that, I'd wager."


def _with_images(msgs, images_by_index):
    out = [dict(m) for m in msgs]
    for i, images in images_by_index.items():
        out[i]["images"] = images
    return out


CHAT_CASES = [
    ("messages", 64, True, HARRY, "You're a test, Harry! I-I'm a what? " + LAST + " ", []),
    ("truncate messages", 1, True, HARRY, LAST + " ", []),
    ("truncate messages with image", 64, True, _with_images(HARRY, {2: ["something"]}), "[img-0]" + LAST + " ", ["something"]),
    (
        "truncate messages with images",
        64,
        True,
        _with_images(HARRY, {0: ["something"], 2: ["somethingelse"]}),
        "[img-0]" + LAST + " ",
        ["somethingelse"],
    ),
    (
        "messages with images",
        2048,
        True,
        _with_images(HARRY, {0: ["something"], 2: ["somethingelse"]}),
        "[img-0]You're a test, Harry! I-I'm a what? [img-1]" + LAST + " ",
        ["something", "somethingelse"],
    ),
    (
        "message with image tag",
        2048,
        True,
        [{"role": "user", "content": "You're a test, Harry! [img]", "images": ["something"]}, HARRY[1], {**HARRY[2], "images": ["somethingelse"]}],
        "You're a test, Harry! [img-0] I-I'm a what? [img-1]" + LAST + " ",
        ["something", "somethingelse"],
    ),
    (
        "messages with interleaved images",
        2048,
        True,
        [HARRY[0], {"role": "user", "images": ["something"]}, {"role": "user", "images": ["somethingelse"]}, HARRY[1], HARRY[2]],
        "You're a test, Harry!\n\n[img-0]\n\n[img-1] I-I'm a what? " + LAST + " ",
        ["something", "somethingelse"],
    ),
    (
        "truncate message with interleaved images",
        1024,
        True,
        [HARRY[0], {"role": "user", "images": ["something"]}, {"role": "user", "images": ["somethingelse"]}, HARRY[1], HARRY[2]],
        "[img-0] I-I'm a what? " + LAST + " ",
        ["somethingelse"],
    ),
    (
        "message with system prompt",
        2048,
        True,
        [{"role": "system", "content": "You are the Test Who Lived."}, *HARRY],
        "You are the Test Who Lived. You're a test, Harry! I-I'm a what? " + LAST + " ",
        [],
    ),
    (
        "out of order system",
        2048,
        True,
        [HARRY[0], HARRY[1], {"role": "system", "content": "You are the Test Who Lived."}, HARRY[2]],
        "You're a test, Harry! I-I'm a what? You are the Test Who Lived. " + LAST + " ",
        [],
    ),
    (
        "multiple images same prompt",
        2048,
        True,
        [{"role": "user", "content": "Compare these two pictures of hotdogs", "images": ["one hotdog", "two hotdogs"]}],
        "[img-0][img-1]Compare these two pictures of hotdogs ",
        ["one hotdog", "two hotdogs"],
    ),
    ("no truncate with limit exceeded", 10, False, HARRY, "You're a test, Harry! I-I'm a what? " + LAST + " ", []),
]


@pytest.mark.parametrize("name,limit,truncate,msgs,expect,images", CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
def test_chat_prompt_like_ollama(name, limit, truncate, msgs, expect, images):
    got = build_chat_prompt(LEGACY, msgs, num_ctx=limit, count_tokens=words, truncate=truncate, has_projector=True)
    assert got.prompt == expect
    assert got.images == images


def test_truncation_keeps_system_messages_and_latest():
    src = "{{ range .Messages }}{{ .Role }}:{{ .Content }} {{ end }}"
    msgs = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "one two three"},
        {"role": "assistant", "content": "four five six"},
        {"role": "user", "content": "seven"},
    ]
    assert chat_prompt(src, msgs, num_ctx=100, count_tokens=words) == "system:rules user:one two three assistant:four five six user:seven "
    assert chat_prompt(src, msgs, num_ctx=6, count_tokens=words) == "system:rules assistant:four five six user:seven "
    assert chat_prompt(src, msgs, num_ctx=2, count_tokens=words) == "system:rules user:seven "
    assert chat_prompt(src, msgs, num_ctx=0, count_tokens=words) == "system:rules user:seven "


def test_truncation_tokenizes_once_when_everything_fits():
    calls = []

    def counting(text):
        calls.append(text)
        return words(text)

    msgs = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    chat_prompt(LEGACY, msgs, num_ctx=2048, count_tokens=counting)
    assert len(calls) == 1
    calls.clear()
    chat_prompt(LEGACY, msgs, num_ctx=2, count_tokens=counting)
    assert len(calls) <= 5


def test_tools_and_tool_calls_reach_the_template():
    src = (
        "{{ range .Tools }}T:{{ .Function.Name }}({{ range $n, $p := .Function.Parameters.Properties }}{{ $n }}:{{ $p.Type }}/"
        "{{ toTypeScriptType $p }} {{ end }}){{ end }}|{{ .Tools }}|"
        "{{ range .Messages }}{{ .Role }}:{{ .Content }}{{ range .ToolCalls }}[{{ .Function.Name }} {{ .Function.Arguments }}]{{ end }}"
        "{{ if .ToolName }}<{{ .ToolName }}>{{ end }};{{ end }}"
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather <now>",
                "parameters": {
                    "type": "object",
                    "required": ["city"],
                    "properties": {"unit": {"type": "string", "enum": ["c", "f"]}, "city": {"type": "string", "description": "City"}, "days": {"type": ["integer", "null"]}},
                },
            },
        }
    ]
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris", "days": 3}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    got = chat_prompt(src, msgs, tools, num_ctx=4096, count_tokens=words)
    tools_json = (
        '[{"type":"function","function":{"name":"get_weather","description":"Weather \\u003cnow\\u003e","parameters":'
        '{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"City"},'
        '"days":{"type":["integer","null"]},"unit":{"type":"string","enum":["c","f"]}}}}}]'
    )
    assert got == (
        "T:get_weather(city:string/string days:[integer null]/number | null unit:string/string )|" + tools_json + "|"
        'user:weather?;assistant:[get_weather {"city":"Paris","days":3,"unit":"c"}];tool:sunny<get_weather>;'
    )


def test_tool_call_arguments_print_like_go_float64():
    src = "{{ range .Messages }}{{ range .ToolCalls }}{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }}{{ end }}{{ end }}"
    msgs = [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"n": 1234567, "s": "x", "f": 1.5}}}]}]
    assert chat_prompt(src, msgs, num_ctx=100, count_tokens=words) == "f=1.5;n=1.234567e+06;s=x;"


def test_date_functions_in_prompts(monkeypatch):
    src = "{{ range .Messages }}{{ .Content }}{{ end }} Today is {{ currentDate }}"
    got = chat_prompt(src, [{"role": "user", "content": "Hello"}], num_ctx=100, count_tokens=words)
    assert got == "Hello Today is " + dt.datetime.now().strftime("%Y-%m-%d")


def test_bad_template_is_a_template_error():
    with pytest.raises(TemplateError):
        chat_prompt("{{ .Prompt ", [{"role": "user", "content": "x"}], num_ctx=10, count_tokens=words)


# -- /api/chat message assembly --------------------------------------------------------------------


def test_chat_messages_adds_model_system_and_messages():
    req = [{"role": "user", "content": "hi"}]
    model_msgs = [{"role": "user", "content": "m1"}, {"role": "assistant", "content": "m2"}]
    got = chat_messages(req, model_system="sys", model_messages=model_msgs)
    assert [(m["role"], m["content"]) for m in got] == [("system", "sys"), ("user", "m1"), ("assistant", "m2"), ("user", "hi")]
    got = chat_messages([{"role": "system", "content": "mine"}, *req], model_system="sys")
    assert [(m["role"], m["content"]) for m in got] == [("system", "mine"), ("user", "hi")]


# -- /api/generate -----------------------------------------------------------------------------------

CHATML = "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}\n{{ end }}<|assistant|>"


def test_generate_prompt_rules():
    g = generate_prompt
    assert g(CHATML, prompt="hi").prompt == "<|user|>hi\n<|assistant|>"
    assert g(CHATML, prompt="hi", model_system="ms").prompt == "<|system|>ms\n<|user|>hi\n<|assistant|>"
    assert g(CHATML, prompt="hi", system="rs", model_system="ms").prompt == "<|system|>rs\n<|user|>hi\n<|assistant|>"
    mm = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert g(CHATML, prompt="hi", model_messages=mm).prompt == "<|user|>a\n<|assistant|>b\n<|user|>hi\n<|assistant|>"
    # a previous context replaces the model messages and goes in front
    assert g(CHATML, prompt="hi", model_messages=mm, context_text="OLD").prompt == "OLD<|user|>hi\n<|assistant|>"
    # raw: the prompt as is
    assert g(CHATML, prompt="hi {{ x }}", raw=True).prompt == "hi {{ x }}"
    # the request template replaces the model's
    assert g(CHATML, prompt="hi", request_template="[{{ .Prompt }}]").prompt == "[hi]"
    # images are tagged like chat
    got = g(CHATML, prompt="look", images=["IMG"])
    assert got == ("<|user|>[img-0]look\n<|assistant|>", ["IMG"])


def test_generate_suffix():
    src = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ .Prompt }}{{ end }}"
    assert generate_prompt(src, prompt="def add(", suffix="return x").prompt == "<PRE> def add( <SUF>return x <MID>"


@pytest.mark.parametrize("kwargs", [{"request_template": "x"}, {"system": "s"}, {"context_text": ""}])
def test_generate_raw_refuses_template_system_context(kwargs):
    with pytest.raises(PromptError, match="raw mode does not support template, system, or context"):
        generate_prompt(CHATML, prompt="hi", raw=True, **kwargs)


def test_generate_truncates_with_a_tokenizer():
    src = "{{ range .Messages }}{{ .Role }}:{{ .Content }} {{ end }}"
    mm = [{"role": "user", "content": "a b c d e f"}, {"role": "assistant", "content": "g h i j"}]
    got = generate_prompt(src, prompt="q", model_system="s", model_messages=mm, num_ctx=3, count_tokens=words)
    assert got.prompt == "system:s user:q "


def test_generate_bad_request_template_is_client_error():
    with pytest.raises(TemplateError):
        generate_prompt(CHATML, prompt="hi", request_template="{{ if }}")


def test_tools_render_as_json():
    """`.Tools`, `.Function` and `.Function.Parameters` print as JSON (`.Function` on purpose
    unlike Ollama HEAD, see values.TemplateToolFunction); a tool without properties marshals
    them as null, as in Ollama."""
    src = "{{ range .Messages }}{{ end }}{{ json .Tools }}|{{ range .Tools }}{{ .Function }};{{ .Function.Parameters }};{{ end }}"
    tools = [
        {"type": "function", "function": {"name": "f", "description": "d"}},
        {"type": "function", "function": {"name": "g", "parameters": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}}},
    ]
    got = execute(src, Values(messages=[{"role": "user", "content": "x"}], tools=tools))
    assert got == (
        '[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"","properties":null}}},'
        '{"type":"function","function":{"name":"g","description":"","parameters":{"type":"object","required":["a"],'
        '"properties":{"a":{"type":"string"}}}}}]'
        '|{"name":"f","description":"d","parameters":{"type":"","properties":null}};{"type":"","properties":null};'
        '{"name":"g","description":"","parameters":{"type":"object","required":["a"],"properties":{"a":{"type":"string"}}}};'
        '{"type":"object","required":["a"],"properties":{"a":{"type":"string"}}};'
    )


TOOL_VECTORS = json.loads((Path(__file__).parent / "data" / "ollama_tool_templates.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", TOOL_VECTORS["cases"], ids=[c["name"] for c in TOOL_VECTORS["cases"]])
def test_ollama_tool_template_vectors(case):
    """Ollama's tool-template renders (system, tool calls, tool results, tools list)."""
    got = chat_prompt(case["template"], TOOL_VECTORS["messages"], TOOL_VECTORS["tools"], num_ctx=1 << 20, count_tokens=words)
    assert got == case["expect"]


def test_truncating_a_long_history_renders_log_n_times():
    calls = []

    def counting(text):
        calls.append(text)
        return words(text)

    msgs = [{"role": "system", "content": "sys"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"} for i in range(1000)
    ]
    got = chat_prompt("{{ range .Messages }}{{ .Content }} {{ end }}", msgs, num_ctx=10, count_tokens=counting)
    assert got == "sys message number 997 message number 998 message number 999 "
    assert len(calls) <= 12
