"""toolchain.thinking: the streaming thinking/content split and tag inference (pure, tables)."""

from __future__ import annotations

import io
import itertools

import pytest

from toolchain.thinking import DEFAULT_TAGS, ThinkingParser, infer_tags, think_enabled


def run(pieces: list[str], opening: str = "<think>", closing: str = "</think>") -> tuple[str, str]:
    parser = ThinkingParser(opening, closing)
    thinking, content = [], []
    for piece in pieces:
        t, c = parser.add(piece)
        thinking.append(t)
        content.append(c)
    t, c = parser.finish()
    return "".join(thinking) + t, "".join(content) + c


# (whole generated text, thinking, content)
WHOLE = [
    ("<think>reasoning</think>answer", "reasoning", "answer"),
    ("<think> internal </think> world", "internal ", "world"),  # space after tags dropped, inside kept
    ("  \n<think>\n\nsteps\n</think>\n\nThe answer.", "steps\n", "The answer."),
    ("<think>a</think><think>b</think>c", "a", "<think>b</think>c"),  # only the first block is thinking
    ("no think", "", "no think"),
    ("  leading space kept without tags", "", "  leading space kept without tags"),
    ("text <think>late</think> tag", "", "text <think>late</think> tag"),  # a tag after content is content
    ("<think>unfinished thought", "unfinished thought", ""),
    ("<think></think>", "", ""),
    ("<think></think>   ", "", ""),
    ("<think>   </think>x", "", "x"),
    ("<think>x</think>  \n  y  ", "x", "y  "),
    ("<think>a < b and c </thin d</think>e", "a < b and c </thin d", "e"),  # a near-miss tag is text
    ("<think>mentions </think inside", "mentions </think inside", ""),  # a tag missing its ">" is text
    ("<think>cut off </thi", "cut off </thi", ""),  # a partial tag at the end is handed out by finish()
    ("<thi", "", "<thi"),  # an opening tag that never completed is content at the end
    ("   ", "", "   "),
    ("", "", ""),
    ("<think>ü → 思考</think>答え", "ü → 思考", "答え"),
]


@pytest.mark.parametrize("text, thinking, content", WHOLE)
def test_whole_text(text, thinking, content):
    assert run([text]) == (thinking, content)


@pytest.mark.parametrize("text, thinking, content", WHOLE)
def test_any_split_gives_the_same_split(text, thinking, content):
    """Streaming: however the text is cut into pieces (tags split across chunks), the result is
    the same as for the whole text."""
    assert run(list(text)) == (thinking, content)  # one character at a time
    for i, j in itertools.combinations(range(len(text) + 1), 2):
        assert run([text[:i], text[i:j], text[j:]]) == (thinking, content), (i, j)


# steps: (piece fed, thinking returned, content returned, state after)
STEPS = [
    ("partial opening tag is held", [
        ("  <th", "", "", "looking"),
        ("in", "", "", "looking"),
        ("k>a", "a", "", "thinking"),
    ]),
    ("partial closing tag is held until it is decided", [
        ("<think>abc</th", "abc", "", "thinking"),
        ("ink>def", "", "def", "done"),
    ]),
    ("a held partial closing tag that turns out not to be one is thinking", [
        ("<think>abc</th", "abc", "", "thinking"),
        ("ing>def", "</thing>def", "", "thinking"),
        ("ghi</thi", "ghi", "", "thinking"),
        ("nk>jkl", "", "jkl", "done"),
    ]),
    ("whitespace after the opening tag is eaten across pieces", [
        ("<think>", "", "", "opened"),
        ("  \n", "", "", "opened"),
        ("  x", "x", "", "thinking"),
    ]),
    ("whitespace after the closing tag is eaten across pieces", [
        ("<think>x</think>", "x", "", "closed"),
        (" \n ", "", "", "closed"),
        ("  y z", "", "y z", "done"),
        ("  w", "", "  w", "done"),
    ]),
    ("content without tags is sent at once, nothing twice", [
        ("  abc", "", "  abc", "done"),
        ("def", "", "def", "done"),
    ]),
]


@pytest.mark.parametrize("steps", [s for _, s in STEPS], ids=[d for d, _ in STEPS])
def test_streaming_steps(steps):
    parser = ThinkingParser()
    for piece, thinking, content, state in steps:
        assert parser.add(piece) == (thinking, content)
        assert parser.state == state


def test_a_prompt_that_opened_the_block_primes_the_parser():
    """When the prompt ends with the opening tag, the server feeds the tag first: the model's
    text is thinking from its first character."""
    parser = ThinkingParser()
    assert parser.add("<think>") == ("", "")
    assert parser.add("first</think>then") == ("first", "then")


def test_other_tags():
    assert run(["[THINK]x[/THINK]y"], "[THINK]", "[/THINK]") == ("x", "y")
    with pytest.raises(ValueError):
        ThinkingParser("", "</think>")


@pytest.mark.parametrize("think, enabled", [
    (None, False), (False, False), (True, True), ("low", True), ("medium", True), ("high", True), ("max", True),
    ("bogus", False),
])
def test_think_enabled(think, enabled):
    assert think_enabled(think) is enabled


QWEN_LIKE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if and $last .Thinking }}
<think>{{ .Thinking }}</think>
{{ end }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if .Think }}<think>{{ end }}
{{ end }}
{{- end }}"""


@pytest.mark.parametrize("template, tags", [
    (QWEN_LIKE, ("<think>", "</think>")),
    ("{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}{{ end }}",
     ("<think>", "</think>")),
    # the innermost list around .Thinking, trimmed
    ("{{ range .Messages }}{{ if .Thinking }}\n  Reasoning:   {{ .Thinking }}   End of reasoning.\n{{ end }}{{ end }}",
     ("Reasoning:", "End of reasoning.")),
    # a .Thinking outside a range over .Messages does not count
    ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", ("", "")),
    # nor one in a range over something else, even inside a range over .Messages
    ("{{ range .Messages }}{{ range .Other }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}"
     "{{ end }}", ("", "")),
    ("{{ range $i, $m := .Messages }}{{ with .Thinking }}[T]{{ . }}[/T]{{ end }}{{ end }}", ("", "")),  # `.` is not .Thinking
    ("{{ range $i, $m := .Messages }}{{ if .Thinking }}[T]{{ .Thinking }}[/T]{{ end }}{{ end }}", ("[T]", "[/T]")),
    ("{{ .Prompt }}", ("", "")),
    ("", ("", "")),
    (None, ("", "")),
    ("{{ if }", ("", "")),  # a template that does not parse has no tags
])
def test_infer_tags(template, tags):
    assert infer_tags(template) == tags


def test_default_tags():
    assert DEFAULT_TAGS == ("<think>", "</think>")


# -- stack run's display ---------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("pieces, plain", [
    ([("", "Hello"), ("", " there")], "Hello there"),
    ([("hmm", ""), (" ok", ""), ("", "Answer")], "Thinking...\nhmm ok\n...done thinking.\n\nAnswer"),
    ([("line\n", ""), ("", "A")], "Thinking...\nline\n...done thinking.\n\nA"),
    ([("still thinking", "")], "Thinking...\nstill thinking"),
    ([("a", "b")], "Thinking...\na\n...done thinking.\n\nb"),
])
def test_stack_run_display(pieces, plain):
    from toolchain.cli.run_cmd import Display

    out = io.StringIO()
    display = Display(out)
    for thinking, content in pieces:
        display.write(thinking, content)
    assert out.getvalue() == plain
    tty = Tty()
    display = Display(tty)
    for thinking, content in pieces:
        display.write(thinking, content)
    text = tty.getvalue()
    assert ("\x1b[90m" in text) == any(t for t, _ in pieces)  # grey reasoning on a terminal
    assert text.replace("\x1b[90m", "").replace("\x1b[1m", "").replace("\x1b[0m", "") == plain
