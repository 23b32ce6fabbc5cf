"""Tool calls in model output: the tag taken from the template, and streaming parsing
(cases from Ollama's tools/template_test.go and tools/tools_test.go, plus our own)."""

from __future__ import annotations

import itertools
import re

import pytest

from toolchain.toolcalls import ToolCallParser, find_arguments, new_call_id, tool_call_tag

TAG_CASES = [
    ("empty", "", "{"),
    ("no tag", "{{if .ToolCalls}}{{end}}", "{"),
    ("no tag with range", "{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}{{end}}", "{"),
    ("json fence", "{{if .ToolCalls}}```json\n{{end}}", "```json"),
    ("square brackets", "{{if .ToolCalls}}[{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("square brackets with whitespace", "{{if .ToolCalls}}\n [ {{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("trailing ]", "{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "{"),
    ("whitespace only", "{{if .ToolCalls}} {{range .ToolCalls}}{{ . }}{{end}}{{end}}", "{"),
    ("whitespace only in range", "{{if .ToolCalls}}{{range .ToolCalls}}\n{{ . }}\n{{end}}{{end}}", "{"),
    ("json objects", '{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{end}}{{end}}', "{"),
    ("json objects with CRLF", '{{if .ToolCalls}}{{range .ToolCalls}}\r\n{"name": "{{ .Function.Name }}"}{{end}}{{end}}', "{"),
    (
        "deepseek",
        "{{if .ToolCalls}}<|tool▁calls▁begin|>{{range .ToolCalls}}<|tool▁call▁begin|>functionget_current_weather\n```json\n{\"location\": \"Tokyo\"}\n```<|tool▁call▁end|>\n{{end}}<|tool▁calls▁end|>{{end}}",
        "<|tool▁calls▁begin|>",
    ),
    ("after range", '{{if .ToolCalls}}{{range .ToolCalls}}<tool_call>{"name": "{{ .Function.Name }}"}</tool_call>{{end}}{{end}}', "<tool_call>"),
    ("leading whitespace before range", '{{if .ToolCalls}}\n{{range .ToolCalls}}<tool_call>{"name": "x"}</tool_call>{{end}}{{end}}', "<tool_call>"),
    ("multiple text nodes", "{{if .ToolCalls}}First text{{if .Something}}inner{{end}}Second text{{end}}", "First text"),
    ("action tag", "{{if .ToolCalls}}Action: ```json{{end}}", "Action: ```json"),
    ("incomplete bracket", "{{if .ToolCalls}}functools[{{end}}", "functools["),
    ("uppercase with bracket", "{{if .ToolCalls}}[TOOL_CALL] [{{end}}", "[TOOL_CALL] ["),
    ("adjacent bracket", "{{if .ToolCalls}}[TOOL_CALL][{{end}}", "[TOOL_CALL][",),
    ("inside messages range", "{{ range .Messages }}{{ if .Content }}{{ .Content }}{{ else if .ToolCalls }}<tc>{{ end }}{{ end }}", "<tc>"),
    ("action before text", "{{if .ToolCalls}}{{ .X }}<tc>{{end}}", "{"),
]


@pytest.mark.parametrize("name,template,tag", TAG_CASES, ids=[c[0] for c in TAG_CASES])
def test_tool_call_tag(name, template, tag):
    assert tool_call_tag(template) == tag


def _tool(name):
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


TOOLS = [_tool(n) for n in ("get_temperature", "get_conditions", "say_hello", "say_hello_world", "get_address", "add")]

QWEN = '{{if .ToolCalls}}<tool_call>{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": {{.Function.Arguments}}}{{end}}</tool_call>{{end}}'
DEEPSEEK = "{{if .ToolCalls}}<|tool▁calls▁begin|>{{range .ToolCalls}}<|tool▁call▁begin|>function<|tool▁sep|>get_current_weather\n```json\n{\"location\": \"Tokyo\"}\n```<|tool▁call▁end|>{{end}}<|tool▁calls▁end|><|end▁of▁sentence|>{{end}}"
JSON = '{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": {{.Function.Arguments}}}{{end}}{{end}}'
MISTRAL = '{{if .ToolCalls}}[TOOL_CALLS] [{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": {{.Function.Arguments}}}{{end}}][/TOOL_CALLS]{{end}}'
LIST = '{{if .ToolCalls}}[{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": {{.Function.Arguments}}}{{end}}]{{end}}'

PARSE_CASES = [
    ("just text", QWEN, ["Hello, how can I help you today?"], "Hello, how can I help you today?", []),
    ("empty input", QWEN, [""], "", []),
    ("tool call", QWEN, ['<tool_call>{"name": "get_conditions", "arguments": {"location": "San Francisco"}}</tool_call>'], "", [("get_conditions", {"location": "San Francisco"})]),
    ("empty args", QWEN, ['<tool_call>{"name": "get_conditions", "arguments": {}}</tool_call>'], "", [("get_conditions", {})]),
    (
        "text before tool call",
        QWEN,
        ['Let me check the weather. <tool_call>{"name": "get_temperature", "arguments": {"city": "New York"}}</tool_call>'],
        "Let me check the weather. ",
        [("get_temperature", {"city": "New York"})],
    ),
    ("tool name in prose", QWEN, ["Let me say hello to the user. I'll use the say_hello tool. "], "Let me say hello to the user. I'll use the say_hello tool. ", []),
    (
        "two calls in a list",
        MISTRAL,
        ['[TOOL_CALLS] [{"name": "get_temperature", "arguments": {"city": "London", "format": "fahrenheit"}}, {"name": "get_conditions", "arguments": {"location": "Tokyo"}}][/TOOL_CALLS]'],
        "",
        [("get_temperature", {"city": "London", "format": "fahrenheit"}), ("get_conditions", {"location": "Tokyo"})],
    ),
    (
        "qwen two calls",
        QWEN,
        ['Okay, let\'s call both tools! <tool_call>{"name": "get_temperature", "arguments": {"city": "London", "format": "fahrenheit"}}</tool_call><tool_call>{"name": "get_conditions", "arguments": {"location": "Tokyo"}}</tool_call>'],
        "Okay, let's call both tools! ",
        [("get_temperature", {"city": "London", "format": "fahrenheit"}), ("get_conditions", {"location": "Tokyo"})],
    ),
    (
        "empty args followed by args",
        QWEN,
        ['Let me say hello and check the weather. <tool_call>{"name": "say_hello", "arguments": {}}</tool_call><tool_call>{"name": "get_temperature", "arguments": {"city": "London", "format": "fahrenheit"}}</tool_call>'],
        "Let me say hello and check the weather. ",
        [("say_hello", {}), ("get_temperature", {"city": "London", "format": "fahrenheit"})],
    ),
    (
        "deepseek",
        DEEPSEEK,
        ["<think>Wait, I need to call a tool</think><|tool▁calls▁begin|><|tool▁call▁begin|>function<|tool▁sep|>get_temperature\n```json\n{\"city\": \"Tokyo\"}\n```<|tool▁call▁end|><|tool▁calls▁end|><|end▁of▁sentence|>"],
        "<think>Wait, I need to call a tool</think>",
        [("get_temperature", {"city": "Tokyo"})],
    ),
    (
        "deepseek incremental",
        DEEPSEEK,
        ["<think>Wait", ", I need", " to call", " a tool</think><|too", "l▁calls▁begin", "|>", "<|tool▁call▁begin|>function<|tool▁sep|>get_temperature\n",
         "```json\n", "{\"city\": \"Tokyo\"}\n", "```", "<|tool▁c", "all▁end|>", "<|tool▁calls▁end|>", "<|end▁of▁sentence|>"],
        "<think>Wait, I need to call a tool</think>",
        [("get_temperature", {"city": "Tokyo"})],
    ),
    ("json", JSON, ["{", '"name": "get_temperature",', '"arguments": {', '"city": "Tokyo"', "}", "}"], "", [("get_temperature", {"city": "Tokyo"})]),
    ("json maybe a call", JSON, ["{", '"name": "get_temperature",', '"arguments": {'], "", []),
    (
        "json not a call",
        JSON,
        ["{", '"name": "search", ', '"arguments": {', '"query": "What is the capital of Canada?"', "}", "}"],
        '{"name": "search", "arguments": {"query": "What is the capital of Canada?"}}',
        [],
    ),
    (
        "json object then call",
        JSON,
        ['{"name": "jeff"}', '{"name": "get_conditions", "arguments": {"location": "San Francisco"}}'],
        '{"name": "jeff"}{"name": "get_conditions", "arguments": {"location": "San Francisco"}}',
        [],
    ),
    (
        "json object then call split",
        JSON,
        ['{"name": "jeff"} {', '"name": "get_conditions", "arguments": {"location": "San Francisco"}}'],
        '{"name": "jeff"} {"name": "get_conditions", "arguments": {"location": "San Francisco"}}',
        [],
    ),
    ("json code", JSON, ['for { fmt.Println("hello") }'], 'for { fmt.Println("hello") }', []),
    (
        "list multiple",
        LIST,
        ["[", "{", '"name": "get_temperature", ', '"arguments": {', '"city": "London"', "}", "},", "{", '"name": "get_conditions", ', '"arguments": {', '"location": "Tokyo"', "}", "}]"],
        "",
        [("get_temperature", {"city": "London"}), ("get_conditions", {"location": "Tokyo"})],
    ),
    ("list partial", LIST, ["[{", '"name": "get_conditions", ', '"arguments": {', '"location": "Tokyo"', "}", "}"], "", [("get_conditions", {"location": "Tokyo"})]),
    ("list invalid", LIST, ["[", "{", '"name": "search", ', '"arguments": {', '"query": "What is the capital of Canada?"', "}", "}"], "", []),
    (
        "name is a substring of another",
        QWEN,
        ['<tool_call>{"name": "get_address", "arguments": {"location": "London"}}</tool_call>'],
        "",
        [("get_address", {"location": "London"})],
    ),
    ("args before name", QWEN, ['<tool_call>{"arguments": {"a": "5", "b": "10"}, "name": "add"}</tool_call>'], "", [("add", {"a": "5", "b": "10"})]),
    ("arguments as JSON text", QWEN, ['<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>'], "", [("add", {"a": 1})]),
    ("parameters key", QWEN, ['<tool_call>{"name": "add", "parameters": {"a": 1}}</tool_call>'], "", [("add", {"a": 1})]),
    ("prefix of a longer name waits", QWEN, ["<tool_call>say_hello", '_world {"x": 1}'], "", [("say_hello_world", {"x": 1})]),
    ("text after the json tag is content", JSON, ["Sure: ", '{"name": "add", "arguments": {}}'], 'Sure: {"name": "add", "arguments": {}}', []),
]


def _run(template, pieces, tools=TOOLS):
    ids = (f"call_{i:08d}" for i in itertools.count())
    parser = ToolCallParser(template, tools, new_id=lambda: next(ids))
    content, calls = "", []
    for piece in pieces:
        c, tc = parser.feed(piece)
        content += c
        calls += tc
    return parser, content, calls


@pytest.mark.parametrize("name,template,pieces,content,calls", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parser(name, template, pieces, content, calls):
    _, got_content, got_calls = _run(template, pieces)
    assert got_content == content
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in got_calls] == calls
    assert [c["function"]["index"] for c in got_calls] == list(range(len(calls)))
    assert [c["id"] for c in got_calls] == [f"call_{i:08d}" for i in range(len(calls))]


@pytest.mark.parametrize("name,template,pieces,content,calls", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parser_char_by_char_gives_the_same_calls(name, template, pieces, content, calls):
    """However the output is split into chunks, the same calls come out."""
    text = "".join(pieces)
    _, got_content, got_calls = _run(template, list(text))
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in got_calls] == calls


FINISH_CASES = [
    ("json value that is not a call", JSON, ['{"name": "get_temperature"'], '{"name": "get_temperature"'),
    ("code after json tag", JSON, ['{ fmt.Println("hello")'], '{ fmt.Println("hello")'),
    ("after a call nothing is left", JSON, ['{"name": "add", "arguments": {}} trailing'], ""),
    ("unfinished call after a real tag is dropped", QWEN, ['<tool_call>{"name": "add", "argu'], ""),
    ("partial tag at the end is text", QWEN, ["Hello <tool_"], "<tool_"),
    ("nothing", QWEN, ["plain"], ""),
]


@pytest.mark.parametrize("name,template,pieces,rest", FINISH_CASES, ids=[c[0] for c in FINISH_CASES])
def test_finish(name, template, pieces, rest):
    parser, _, _ = _run(template, pieces)
    assert parser.finish() == rest


ARGUMENT_CASES = [
    ("empty", "", None),
    ("whitespace", "   \n\t  ", None),
    ("unbalanced open", '{"format": "fahrenheit", "location": "San Francisco"', None),
    ("extra closing", '{"format": "fahrenheit"}}', {"format": "fahrenheit"}),
    ("invalid json", '{format: fahrenheit, location: "San Francisco"}', None),
    ("valid", '{"name": "get_temperature", "arguments": {"format": "fahrenheit", "location": "San Francisco, CA"}}', {"format": "fahrenheit", "location": "San Francisco, CA"}),
    ("special tokens", '[tool]get_temperature[args]{"format": "fahrenheit"}[end]', {"format": "fahrenheit"}),
    ("in an array", '[{"name": "get_temperature", "arguments": {"location": "SF"}}', {"location": "SF"}),
    ("nested deep", '{"function": {"name": "get_temperature", "arguments": {"location": "SF"}}}', {"location": "SF"}),
    ("call syntax", 'get_temperature({"location": "San Francisco, CA"})', {"location": "San Francisco, CA"}),
    ("keyed by tool name", '{"get_temperature": {"location": "Tokyo"}}', {"location": "Tokyo"}),
    ("string with braces", '{"name": "p", "arguments": {"code": "if (x > 0) { return true; }"}}', {"code": "if (x > 0) { return true; }"}),
    ("escaped quotes and braces", '{"name": "a", "arguments": {"text": "The JSON is: {\\"key\\": \\"val{ue}\\"}"}}', {"text": 'The JSON is: {"key": "val{ue}"}'}),
    ("closing brace in string", '{"name": "s", "arguments": {"pattern": "regex: }"}}', {"pattern": "regex: }"}),
    ("unicode escape", '{"name": "t", "arguments": {"text": "Unicode: \\u007B and \\u007D"}}', {"text": "Unicode: { and }"}),
]


@pytest.mark.parametrize("name,buf,want", ARGUMENT_CASES, ids=[c[0] for c in ARGUMENT_CASES])
def test_find_arguments(name, buf, want):
    assert find_arguments("get_temperature", buf)[0] == want


def test_call_ids_look_like_ollamas():
    ids = {new_call_id() for _ in range(50)}
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)
    assert len(ids) > 1


def test_after_done_everything_is_content():
    parser = ToolCallParser(JSON, TOOLS)
    assert parser.feed("Hi ") == ("Hi ", [])
    assert parser.feed('{"name": "add", "arguments": {}}') == ('{"name": "add", "arguments": {}}', [])


def test_tools_may_be_pydantic_like_objects():
    class Tool:
        def __init__(self, name):
            self.name = name

        def model_dump(self):
            return {"type": "function", "function": {"name": self.name}}

    parser = ToolCallParser(QWEN, [Tool("add")])
    content, calls = parser.feed('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>')
    assert calls[0]["function"] == {"index": 0, "name": "add", "arguments": {"a": 1}}


OLLAMA_V06 = {c["name"]: c["template"] for c in __import__("json").loads(
    (__import__("pathlib").Path(__file__).parent / "data" / "ollama_tool_templates.json").read_text(encoding="utf-8"))["cases"]}
TWO_CALLS = [("get_current_weather", {"format": "fahrenheit", "location": "San Francisco, CA"}),
             ("get_current_weather", {"format": "celsius", "location": "Toronto, Canada"})]
REAL_TEMPLATE_CASES = [
    ("firefunction", ' functools[{"name": "get_current_weather", "arguments": {"format":"fahrenheit","location":"San Francisco, CA"}},'
                     '{"name": "get_current_weather", "arguments": {"format":"celsius","location":"Toronto, Canada"}}]'),
    ("llama3-groq-tool-use", '<tool_call>\n{"name": "get_current_weather", "arguments": {"format":"fahrenheit","location":"San Francisco, CA"}}\n'
                             '{"name": "get_current_weather", "arguments": {"format":"celsius","location":"Toronto, Canada"}}\n</tool_call>'),
    ("nemotron", '<toolcall>{"name": "get_current_weather", "arguments": {"format":"fahrenheit","location":"San Francisco, CA"}},'
                 '{"name": "get_current_weather", "arguments": {"format":"celsius","location":"Toronto, Canada"}}]} </toolcall>'),
]


@pytest.mark.parametrize("model,output", REAL_TEMPLATE_CASES, ids=[c[0] for c in REAL_TEMPLATE_CASES])
def test_real_model_templates(model, output):
    """Outputs from Ollama's v0.6.0 TestExecuteWithTools, parsed with those models' templates."""
    tools = [_tool("get_current_weather")]
    for pieces in ([output], list(output)):
        _, content, calls = _run(OLLAMA_V06[model], pieces, tools)
        assert content.strip() == ""
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == TWO_CALLS
