"""Separating a thinking model's reasoning from its answer (Ollama's `thinking` package).

Pure: no I/O, no model. Two pieces:

* `infer_tags(template)`: the tags a model's TEMPLATE wraps past thinking in — Ollama's
  heuristic: a `.Thinking` field inside a `range` over `.Messages`; the first and last text
  of the innermost list around it (trimmed) are the opening and closing tags, e.g.
  `{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}` → ("<think>", "</think>").
* `ThinkingParser`: fed the generated text piece by piece (a tag may arrive split over many
  pieces), returns `(thinking, content)` as soon as each is unambiguous. Rules, as Ollama's:
  leading whitespace before the opening tag is skipped; text that does not start with the
  opening tag is all content (thinking was skipped); whitespace right after the opening tag
  and right after the closing tag is dropped; everything after the closing tag is content,
  even another closing tag.

`finish()` is Corral's addition: at the end of generation it hands out what was held back
(a partial tag that never completed), where Ollama drops it.
"""

from __future__ import annotations

from typing import Any, Optional, Union

# Go's unicode.IsSpace (the White_Space property); Python's str.isspace also counts \x1c-\x1f.
_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
         "\u2028\u2029\u202f\u205f\u3000"

DEFAULT_TAGS = ("<think>", "</think>")


def _lstrip(text: str) -> str:
    return text.lstrip(_SPACE)


def _overlap(text: str, tag: str) -> int:
    """The length of the longest suffix of `text` that is a prefix of `tag`."""
    for n in range(min(len(tag), len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


LOOKING, OPENED, THINKING, CLOSED, DONE = "looking", "opened", "thinking", "closed", "done"


class ThinkingParser:
    """Streaming split of generated text into thinking and content (see the module docstring)."""

    def __init__(self, opening: str = DEFAULT_TAGS[0], closing: str = DEFAULT_TAGS[1]) -> None:
        if not opening or not closing:
            raise ValueError("a thinking parser needs both tags")
        self.opening, self.closing = opening, closing
        self.state = LOOKING
        self._acc = ""

    def add(self, text: str) -> tuple[str, str]:
        """Feed one piece of generated text; returns (thinking, content) ready to send."""
        self._acc += text
        thinking: list[str] = []
        content: list[str] = []
        more = True
        while more:
            t, c, more = self._eat()
            thinking.append(t)
            content.append(c)
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """The end of the text: (thinking, content) still held back."""
        acc, self._acc = self._acc, ""
        if self.state == THINKING:
            return acc, ""
        if self.state in (LOOKING, DONE):  # a partial opening tag (or whitespace) that never completed
            return "", acc
        return "", ""

    def _eat(self) -> tuple[str, str, bool]:
        acc = self._acc
        if self.state == LOOKING:
            trimmed = _lstrip(acc)
            if trimmed.startswith(self.opening):
                after = _lstrip(trimmed[len(self.opening):])
                self._acc = after
                self.state = THINKING if after else OPENED
                return "", "", True
            if self.opening.startswith(trimmed):  # whitespace only, or part of the tag so far
                return "", "", False
            self.state = DONE  # no opening tag: all of it is content, whitespace included
            self._acc = ""
            return "", acc, False
        if self.state == OPENED:
            trimmed = _lstrip(acc)
            self._acc = trimmed
            if not trimmed:
                return "", "", False
            self.state = THINKING
            return "", "", True
        if self.state == THINKING:
            at = acc.find(self.closing)
            if at >= 0:
                rest = _lstrip(acc[at + len(self.closing):])
                self._acc = ""
                self.state = DONE if rest else CLOSED
                return acc[:at], rest, False
            keep = _overlap(acc, self.closing)
            if keep:
                self._acc = acc[len(acc) - keep:]
                return acc[: len(acc) - keep], "", False
            self._acc = ""
            return acc, "", False
        if self.state == CLOSED:
            trimmed = _lstrip(acc)
            self._acc = ""
            if trimmed:
                self.state = DONE
            return "", trimmed, False
        self._acc = ""
        return "", acc, False


def think_enabled(think: Union[bool, str, None]) -> bool:
    """Ollama's `ThinkValue.Bool`: true, or any level."""
    if isinstance(think, bool):
        return think
    return think in ("high", "medium", "low", "max")


def infer_tags(template: Any) -> tuple[str, str]:
    """Ollama's `thinking.InferTags` over a TEMPLATE (source text or a parsed `Template`);
    ("", "") when the template shows no thinking block (or does not parse)."""
    from toolchain.template import TemplateError, nodes, parse

    if template is None or template == "":
        return "", ""
    if isinstance(template, str):
        try:
            template = parse(template)
        except TemplateError:
            return "", ""
    tags = ["", ""]
    ancestors: list[Any] = []

    def uses_messages(rng: Any) -> bool:
        return any(isinstance(n, nodes.FieldNode) and n.ident and n.ident[0] == "Messages"
                   for n in nodes.walk(rng.pipe))

    def visit(node: Any) -> None:
        ancestors.append(node)
        if isinstance(node, nodes.FieldNode) and node.ident and node.ident[0] == "Thinking":
            rng: Optional[Any] = next((a for a in reversed(ancestors) if isinstance(a, nodes.RangeNode)), None)
            if rng is not None and uses_messages(rng):
                around = next((a for a in reversed(ancestors) if isinstance(a, nodes.ListNode)), None)
                if around is not None and around.nodes:
                    if isinstance(around.nodes[0], nodes.TextNode):
                        tags[0] = around.nodes[0].text.strip(_SPACE)
                    if isinstance(around.nodes[-1], nodes.TextNode):
                        tags[1] = around.nodes[-1].text.strip(_SPACE)
        if not isinstance(node, nodes.ChainNode):  # Go's walk treats `(pipe).Field` as a leaf
            for child in nodes.children(node):
                visit(child)
        ancestors.pop()

    visit(template.root)
    return tags[0], tags[1]
