"""The Go text/template engine: one table per concern (constructs, functions, printing, errors)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from toolchain.errors import CorralError
from toolchain.template import OrderedMap, TemplateError, parse, render

NOW = dt.datetime(2024, 3, 1, 12, 0, 0)


@dataclass
class Msg:
    Role: str
    Content: str
    ToolCalls: list = field(default_factory=list)


@dataclass
class Prop:
    AnyOf: list
    Type: list


class Args(dict):
    __go_type__ = "template.templateArgs"

    def __go_str__(self) -> str:
        from toolchain.template.gofmt import marshal_json

        return marshal_json(self)


CONSTRUCTS = [
    # text, trimming, comments
    ("plain text", "hello", {}, "hello"),
    ("action", "{{ .A }}", {"A": "x"}, "x"),
    ("trim left", "a \n\t {{- .A }}", {"A": "x"}, "ax"),
    ("trim right", "{{ .A -}} \n b", {"A": "x"}, "xb"),
    ("trim both", "a  {{- .A -}}  b", {"A": "x"}, "axb"),
    ("dash without space is a number", "{{-3}}", {}, "-3"),
    ("comment", "a{{/* hidden */}}b", {}, "ab"),
    ("comment trims", "a {{- /* x */ -}} b", {}, "ab"),
    ("newline inside action", "{{ .A\n }}", {"A": "x"}, "x"),
    # fields and variables
    ("missing key prints no value", "{{ .Missing }}", {}, "<no value>"),
    ("nested map", "{{ .A.B.C }}", {"A": {"B": {"C": 1}}}, "1"),
    ("struct field", "{{ .M.Role }}", {"M": Msg("user", "hi")}, "user"),
    ("dollar is the data", "{{ range .L }}{{ $.A }}{{ end }}", {"A": "z", "L": [1, 2]}, "zz"),
    ("dollar field chain", "{{ $.M.Content }}", {"M": Msg("user", "hi")}, "hi"),
    ("declare and assign", "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", {}, "2"),
    ("declaration prints nothing", "{{ $x := .A }}", {"A": "x"}, ""),
    ("assign in range updates outer", '{{ $s := "" }}{{ range .L }}{{ $s = printf "%s%v" $s . }}{{ end }}{{ $s }}', {"L": [1, 2, 3]}, "123"),
    ("variable scope ends with if", '{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}', {}, "21"),
    ("nil variable field is no value", "{{ $x := .Missing }}{{ $x.Y }}", {}, "<no value>"),
    ("chain on parenthesised", "{{ (index .L 0).A }}", {"L": [{"A": "deep"}]}, "deep"),
    ("dot", "{{ . }}", "str", "str"),
    # if / else
    ("if true", "{{ if .A }}y{{ end }}", {"A": 1}, "y"),
    ("if false", "{{ if .A }}y{{ else }}n{{ end }}", {"A": 0}, "n"),
    ("else if chain", '{{ if eq .A 1 }}one{{ else if eq .A 2 }}two{{ else }}many{{ end }}', {"A": 2}, "two"),
    ("else with", "{{ with .A }}a{{ else with .B }}{{ . }}{{ else }}none{{ end }}", {"A": "", "B": "b"}, "b"),
    ("if declares", "{{ if $x := .A }}{{ $x }}{{ end }}", {"A": "v"}, "v"),
    # truthiness
    ("empty string false", "{{ if .A }}t{{ else }}f{{ end }}", {"A": ""}, "f"),
    ("empty list false", "{{ if .A }}t{{ else }}f{{ end }}", {"A": []}, "f"),
    ("empty map false", "{{ if .A }}t{{ else }}f{{ end }}", {"A": {}}, "f"),
    ("zero float false", "{{ if .A }}t{{ else }}f{{ end }}", {"A": 0.0}, "f"),
    ("nil false", "{{ if .A }}t{{ else }}f{{ end }}", {"A": None}, "f"),
    ("struct true", "{{ if .A }}t{{ else }}f{{ end }}", {"A": Msg("", "")}, "t"),
    ("non-empty true", "{{ if .A }}t{{ else }}f{{ end }}", {"A": [0]}, "t"),
    # with
    ("with sets dot", "{{ with .A }}{{ .B }}{{ end }}", {"A": {"B": "b"}}, "b"),
    ("with else", "{{ with .A }}x{{ else }}none{{ end }}", {"A": ""}, "none"),
    ("with declares", "{{ with $x := .A }}{{ $x }}{{ end }}", {"A": "q"}, "q"),
    # range
    ("range list", "{{ range .L }}[{{ . }}]{{ end }}", {"L": ["a", "b"]}, "[a][b]"),
    ("range index and value", "{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
    ("range one variable is the element", "{{ range $v := .L }}{{ $v }}{{ end }}", {"L": ["a", "b"]}, "ab"),
    ("range map sorted", "{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", {"M": {"b": 2, "a": 1}}, "a=1;b=2;"),
    ("range map values", "{{ range .M }}{{ . }}{{ end }}", {"M": {"b": 2, "a": 1}}, "12"),
    ("range else", "{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("range nil else", "{{ range .L }}x{{ else }}empty{{ end }}", {}, "empty"),
    ("range int", "{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
    ("break", "{{ range .L }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "1"),
    ("continue", "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "13"),
    ("range vars reset per iteration", "{{ range .L }}{{ $x := . }}{{ $x }}{{ end }}", {"L": [1, 2]}, "12"),
    ("last element idiom", "{{ range $i, $_ := .L }}{{ if eq (len (slice $.L $i)) 1 }}last={{ . }}{{ end }}{{ end }}", {"L": [1, 2, 3]}, "last=3"),
    # define / template / block
    ("define and template", '{{ define "x" }}[{{ . }}]{{ end }}{{ template "x" .A }}', {"A": 5}, "[5]"),
    ("block", '{{ block "y" .A }}<{{ . }}>{{ end }}', {"A": 5}, "<5>"),
    ("template dollar is new dot", '{{ define "x" }}{{ $ }}{{ end }}{{ template "x" "in" }}', {}, "in"),
    # pipelines and literals
    ("pipeline final arg", '{{ "x" | printf "%s-%s" "y" }}', {}, "y-x"),
    ("pipeline chain", '{{ .A | len | printf "%d!" }}', {"A": "abc"}, "3!"),
    ("parenthesised args", '{{ printf "%d" (len .L) }}', {"L": [1, 2]}, "2"),
    ("string escapes", r'{{ "a\tb\u00e9\x41\"" }}', {}, 'a\tbéA"'),
    ("raw string", "{{ `raw\\n` }}", {}, "raw\\n"),
    ("char constant", "{{ 'a' }}", {}, "97"),
    ("numbers", "{{ 0x10 }} {{ 1e3 }} {{ 1_000 }} {{ -3 }} {{ 017 }} {{ 0b101 }} {{ .5 }}", {}, "16 1000 1000 -3 15 5 0.5"),
    ("bools", "{{ true }} {{ false }}", {}, "true false"),
]


@pytest.mark.parametrize("name,src,values,expect", CONSTRUCTS, ids=[c[0] for c in CONSTRUCTS])
def test_constructs(name, src, values, expect):
    assert render(src, values, now=NOW) == expect


FUNCTIONS = [
    ("eq", '{{ eq .A "a" }}', {"A": "a"}, "true"),
    ("eq many", '{{ eq .A "a" "b" "c" }}', {"A": "c"}, "true"),
    ("eq none", '{{ eq .A "a" "b" }}', {"A": "c"}, "false"),
    ("eq nil", "{{ eq .Missing nil }}", {}, "true"),
    ("eq nil vs value", '{{ eq .Missing "a" }}', {}, "false"),
    ("ne", "{{ ne 1 2 }}", {}, "true"),
    ("lt le gt ge", '{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 2.5 3.5 }}', {}, "true true true false"),
    ("and returns falsy", "{{ and 1 0 2 }}", {}, "0"),
    ("and returns last", "{{ and 1 2 }}", {}, "2"),
    ("or returns first truthy", '{{ or .A .B "d" }}', {"A": 0, "B": "b"}, "b"),
    ("or short-circuits", "{{ or 1 .Missing.Field }}", {}, "1"),
    ("and short-circuits", "{{ and 0 .Missing.Field }}", {}, "0"),
    ("not", "{{ not .A }} {{ not 1 }}", {"A": []}, "true false"),
    ("len", '{{ len .L }} {{ len .M }} {{ len "héllo" }}', {"L": [1, 2], "M": {"a": 1}}, "2 1 6"),
    ("index", '{{ index .L 1 }} {{ index .M "a" }} {{ index .N 0 1 }}', {"L": [1, 2], "M": {"a": "x"}, "N": [[1, 2]]}, "2 x 2"),
    ("index missing map key", '{{ index .M "z" }}', {"M": {}}, "<no value>"),
    ("slice", '{{ slice .L 1 }} {{ slice .L 1 2 }} {{ slice "hello" 1 3 }} {{ slice .L }}', {"L": [1, 2, 3]}, "[2 3] [2] el [1 2 3]"),
    ("print", '{{ print 1 2 "a" 3 "b" "c" }}', {}, "1 2a3bc"),
    ("println", '{{ println 1 "a" }}', {}, "1 a\n"),
    ("printf verbs", '{{ printf "%s|%d|%v|%q|%t|%x|%X|%c|%%" "a" 3 .L "x\\n" true 255 255 65 }}', {"L": [1, "b"]}, 'a|3|[1 b]|"x\\n"|true|ff|FF|A|%'),
    ("printf width and precision", '{{ printf "%5.1f|%-4d|%04d|%6s|%.2s|%+d" 3.14159 7 42 "ab" "abcd" 5 }}', {}, "  3.1|7   |0042|    ab|ab|+5"),
    ("printf float forms", '{{ printf "%v %v %v %g %e" 1.5 1000000.0 3.0 0.00001 1234.5 }}', {}, "1.5 1e+06 3 1e-05 1.234500e+03"),
    ("printf wrong type", '{{ printf "%d" "s" }}', {}, "%!d(string=s)"),
    ("printf missing", '{{ printf "%d %s" 1 }}', {}, "1 %!s(MISSING)"),
    ("printf extra", '{{ printf "%d" 1 "x" }}', {}, '1%!(EXTRA string=x)'),
    ("printf map and struct", '{{ printf "%v %v" .M .S }}', {"M": {"b": 1, "a": [2]}, "S": Msg("user", "hi")}, "map[a:[2] b:1] {user hi []}"),
    ("html", '{{ html "<a href=\'x\'>&\\"" }}', {}, "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"),
    ("js", '{{ js "it\'s <b>" }}', {}, "it\\'s \\u003Cb\\u003E"),
    ("urlquery", '{{ urlquery "a b&c" }}', {}, "a+b%26c"),
    ("json map sorted and html-escaped", "{{ json .M }}", {"M": {"b": [1, 2.5, None], "a": "<x>&é"}}, '{"a":"\\u003cx\\u003e\\u0026é","b":[1,2.5,null]}'),
    ("json ordered map", "{{ json .M }}", {"M": OrderedMap([("b", 1), ("a", 2)])}, '{"b":1,"a":2}'),
    ("json struct", "{{ json .S }}", {"S": Msg("user", "hi")}, '{"Role":"user","Content":"hi","ToolCalls":[]}'),
    ("json float forms", "{{ json .L }}", {"L": [3.0, 1e21, 1e-7, 0.5]}, "[3,1e+21,1e-7,0.5]"),
    ("stringer printing", "{{ .A }}", {"A": Args(b=1, a="x")}, '{"a":"x","b":1}'),
    ("currentDate", "{{ currentDate }}", {}, "2024-03-01"),
    ("currentDate ignores format", '{{ currentDate "%Y" }}', {}, "2024-03-01"),
    ("yesterdayDate", "{{ yesterdayDate }}", {}, "2024-02-29"),
    ("toTypeScriptType", "{{ toTypeScriptType .P }}", {"P": Prop([], ["integer"])}, "number"),
    ("toTypeScriptType union", "{{ toTypeScriptType .P }}", {"P": Prop([], ["string", "null"])}, "string | null"),
    ("toTypeScriptType anyOf", "{{ toTypeScriptType .P }}", {"P": Prop([Prop([], ["array"]), Prop([], ["object"])], [])}, "any[] | Record<string, any>"),
    ("toTypeScriptType other", "{{ toTypeScriptType .P }}", {"P": "x"}, "any"),
    ("identifier as argument", "{{ printf \"%s!\" currentDate }}", {}, "2024-03-01!"),
]


@pytest.mark.parametrize("name,src,values,expect", FUNCTIONS, ids=[c[0] for c in FUNCTIONS])
def test_functions(name, src, values, expect):
    assert render(src, values, now=NOW) == expect


PARSE_ERRORS = [
    ("unclosed action", "{{ .Prompt ", "unclosed action", 1, 1),
    ("unclosed if", "x\n{{ if .A }}", "unexpected EOF", 2, 12),
    ("stray end", "{{ end }}", "unexpected {{end}}", 1, 4),
    ("stray else", "{{ else }}", "unexpected {{else}}", 1, 4),
    ("unknown function", "ab\n  {{ foo }}", 'function "foo" not defined', 2, 6),
    ("undefined variable", "{{ $y }}", 'undefined variable "$y"', 1, 4),
    ("variable out of scope", "{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}", 'undefined variable "$x"', 1, 39),
    ("break outside range", "{{ break }}", "{{break}} outside {{range}}", 1, 4),
    ("continue outside range", "{{ if 1 }}{{ continue }}{{ end }}", "{{continue}} outside {{range}}", 1, 14),
    ("empty if", "{{ if }}{{ end }}", "missing value for if", 1, 7),
    ("empty action", "{{ }}", "missing value for command", 1, 4),
    ("non-executable stage", "{{ 1 | 2 }}", "non executable command in pipeline stage 2", 1, 8),
    ("unterminated string", '{{ "abc }}', "unterminated quoted string", 1, 4),
    ("bad escape", '{{ "\\q" }}', "invalid escape", 1, 4),
    ("unclosed paren", "{{ (len .A }}", "unclosed left paren", 1, 12),
    ("unexpected paren", "{{ len .A) }}", "unexpected right paren", 1, 10),
    ("unclosed comment", "{{/* x }}", "unclosed comment", 1, 1),
    ("comment before delimiter", "{{/* x */ .A }}", "comment ends before closing delimiter", 1, 1),
    ("bad number", "{{ 12ab }}", "bad number syntax", 1, 4),
    ("bad character", "{{ .A# }}", "bad character", 1, 6),
    ("template without pipeline (Ollama)", '{{define "x"}}{{template "x"}}{{end}}{{template "x"}}', "undefined template specified", 0, 0),
    ("else if in range", "{{ range .L }}{{ else if .X }}{{ end }}", "{{else if}} inside {{range}}", 1, 18),
    ("define not at top", '{{ if 1 }}{{ define "x" }}{{ end }}{{ end }}', "define is only allowed at the top level", 1, 14),
    ("double define", '{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}', "multiple definition", 1, 30),
    ("range three variables", "{{ range $a, $b, $c := .L }}{{ end }}", "too many declarations in range", 1, 16),
    ("declare in if with comma", "{{ if $a, $b := .L }}{{ end }}", "too many declarations in if", 1, 9),
    ("dot after literal", '{{ "a".B }}', "unexpected . after term", 1, 7),
    ("keyword as operand", "{{ len if }}", 'unexpected "if"', 1, 8),
    ("else after else", "{{ if 1 }}{{ else }}{{ else }}{{ end }}", "expected {{end}}", 1, 24),
]


@pytest.mark.parametrize("name,src,message,line,col", PARSE_ERRORS, ids=[c[0] for c in PARSE_ERRORS])
def test_parse_errors(name, src, message, line, col):
    with pytest.raises(TemplateError) as info:
        parse(src)
    err = info.value
    assert message in str(err)
    assert isinstance(err, CorralError)
    assert (err.line, err.col) == (line, col)


EXEC_ERRORS = [
    ("field of nil", "{{ .Missing.X }}", {}, "nil pointer evaluating interface {}.X"),
    ("unknown struct field", "{{ .M.Nope }}", {"M": Msg("u", "c")}, "can't evaluate field Nope in type Msg"),
    ("field of string", "{{ .A.B }}", {"A": "s"}, "can't evaluate field B in type string"),
    ("nil command", "{{ nil }}", {}, "nil is not a command"),
    ("args to non-function", '{{ "a" "b" }}', {}, 'can\'t give argument to non-function "a"'),
    ("args to field", '{{ .A "b" }}', {"A": "x"}, "A is not a method but has arguments"),
    ("eq incompatible", '{{ eq 1 "a" }}', {}, "error calling eq: incompatible types for comparison"),
    ("lt on bool", "{{ lt true false }}", {}, "invalid type for comparison"),
    ("eq on lists", "{{ eq .L .L }}", {"L": [1]}, "non-comparable type"),
    ("len of int", "{{ len 3 }}", {}, "error calling len: len of type int"),
    ("index out of range", "{{ index .L 5 }}", {"L": [1]}, "index out of range: 5"),
    ("index of nil", "{{ index nil 1 }}", {}, "index of untyped nil"),
    ("slice reversed", "{{ slice .L 2 1 }}", {"L": [1, 2, 3]}, "invalid slice index: 2 > 1"),
    ("wrong arg count", "{{ len }}", {}, "wrong number of args for len: want 1 got 0"),
    ("and without args", "{{ and }}", {}, "wrong number of args for and: want at least 1 got 0"),
    ("printf format not a string", "{{ printf 1 }}", {}, "expected string; got int"),
    ("currentDate non-string", "{{ currentDate 1 }}", {}, "expected string; got int"),
    ("range over string", '{{ range "abc" }}{{ end }}', {}, "range can't iterate over abc"),
    ("range int two variables", "{{ range $i, $v := 3 }}{{ end }}", {}, "can't use 3 to iterate over more than one variable"),
    ("no such template", '{{ template "nope" . }}', {}, 'no such template "nope"'),
    ("recursion", '{{define "a"}}{{template "a" .}}{{end}}{{template "a" .}}', {}, "exceeded maximum template depth"),
    ("assign undeclared", "{{ $x = 1 }}", {}, "undefined variable: $x"),
]


@pytest.mark.parametrize("name,src,values,message", EXEC_ERRORS, ids=[c[0] for c in EXEC_ERRORS])
def test_exec_errors(name, src, values, message):
    with pytest.raises(TemplateError) as info:
        render(src, values)
    assert message in str(info.value)
    assert info.value.line >= 1


def test_error_message_names_position():
    with pytest.raises(TemplateError) as info:
        parse("line one\n{{ .A | nope }}")
    assert str(info.value) == 'template: line 2, column 9: function "nope" not defined'


def test_deep_nesting_is_an_error_not_a_crash():
    src = "{{ if 1 }}" * 3000 + "{{ end }}" * 3000
    with pytest.raises(TemplateError):
        parse(src)


def test_non_string_source_is_an_error():
    with pytest.raises(TemplateError):
        parse(None)  # type: ignore[arg-type]


def test_vars_like_ollama():
    cases = {
        "{{ .Prompt }}": ["prompt"],
        "{{ .System }} {{ .Prompt }} {{ .Response }}": ["prompt", "response", "system"],
        "{{ with .Tools }}{{ . }}{{ end }} {{ .System }}": ["system", "tools"],
        "{{ range .Messages }}{{ .Role }} {{ .Content }}{{ end }}": ["content", "messages", "role"],
        "{{ if $.System }}{{ end }}": ["$", "system"],
        '{{ define "x" }}{{ .Inner }}{{ end }}{{ template "x" .Outer }}': ["inner", "outer"],
    }
    for src, expect in cases.items():
        assert parse(src).vars() == expect, src


def test_execute_is_repeatable_and_pure():
    tmpl = parse("{{ $x := .A }}{{ range .L }}{{ $x = printf \"%s%v\" $x . }}{{ end }}{{ $x }}")
    values = {"A": ">", "L": [1, 2]}
    assert tmpl.execute(values) == ">12"
    assert tmpl.execute(values) == ">12"
    assert values == {"A": ">", "L": [1, 2]}


HOSTILE = [
    ("huge range", "{{ range 100000000 }}x{{ end }}", "exceeds"),
    ("doubling string", '{{ $x := "ab" }}{{ range 40 }}{{ $x = printf "%s%s" $x $x }}{{ end }}{{ len $x }}', "exceeds"),
    ("nested ranges", "{{ range 2000 }}{{ range 2000 }}{{ end }}{{ end }}", "exceeds"),
]


@pytest.mark.parametrize("name,src,message", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_templates_fail_instead_of_hanging(name, src, message):
    with pytest.raises(TemplateError, match=message):
        render(src, {})


def test_printf_refuses_huge_widths_like_go():
    assert render('{{ printf "%99999999d" 1 }}', {}) == "%!(BADWIDTH)1"


def test_printf_c_gives_replacement_for_invalid_runes():
    assert render('{{ printf "%c%c%c" 65 55296 -1 }}', {}) == "A\ufffd\ufffd"


def test_variable_must_end_at_a_terminator_like_go():
    with pytest.raises(TemplateError, match='bad character "="'):
        parse("{{ $x=1 }}")
