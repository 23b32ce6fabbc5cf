"""Go text/template, as Ollama uses it for a model's TEMPLATE.

    tmpl = parse("{{ range .Messages }}{{ .Role }}: {{ .Content }}\\n{{ end }}")
    tmpl.execute({"Messages": [...]})
    render(src, values)

`parse` raises `TemplateError` (a `CorralError`, i.e. a client error) for a template Ollama
would refuse: Go's parse errors plus Ollama's own check that every `{{template}}` call passes a
pipeline. Execution follows Go's semantics (truthiness, `missingkey=zero`, sorted map ranges,
fmt printing) and offers Go's builtin functions plus Ollama's `json`, `currentDate`,
`yesterdayDate` and `toTypeScriptType`. Values are plain Python data (see `gofmt`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional

from toolchain.template import nodes
from toolchain.template.errors import TemplateError
from toolchain.template.executor import Executor
from toolchain.template.funcs import BUILTINS
from toolchain.template.gofmt import OrderedMap
from toolchain.template.parser import parse_tree

__all__ = ["Template", "TemplateError", "OrderedMap", "parse", "render", "identifiers", "nodes"]


@dataclass
class Template:
    """A parsed template: the main tree, the `define`d templates, and the source text."""

    source: str
    root: nodes.ListNode
    defines: dict[str, nodes.ListNode] = field(default_factory=dict)

    def execute(self, values: Any, *, now: Optional[dt.datetime] = None, root: Optional[nodes.ListNode] = None) -> str:
        """Render with `values` as dot (normally a dict). `now` fixes the clock of the date
        functions; `root` executes another tree (e.g. a trimmed copy) with this template's
        definitions."""
        return Executor(self.source, self.defines, now).run(self.root if root is None else root, values)

    def trees(self) -> list[nodes.ListNode]:
        """The main tree then every defined template's tree."""
        return [self.root, *self.defines.values()]

    def vars(self) -> list[str]:
        """Ollama's `Template.Vars`: the lower-cased field and variable names the template
        mentions (`.Messages` -> "messages", `$.System` -> "$", "system"), sorted, unique."""
        names: set[str] = set()
        for tree in self.trees():
            for node in tree.nodes:
                names.update(x.lower() for x in identifiers(node))
        return sorted(names)

    def contains(self, text: str) -> bool:
        return text in self.source

    def __str__(self) -> str:
        return self.source


def identifiers(node: Any) -> list[str]:
    """Ollama's `template.Identifiers`: field and variable names in the pipelines of `node`
    (the declared variables of a pipeline and field chains after `(...)` are not included)."""
    n = nodes
    if isinstance(node, n.ListNode):
        return [x for child in node.nodes for x in identifiers(child)]
    if isinstance(node, n.TemplateNode):
        if node.pipe is None:
            raise TemplateError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, n.ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, n.BranchNode):
        out = identifiers(node.pipe) + identifiers(node.list)
        if node.else_list is not None:
            out += identifiers(node.else_list)
        return out
    if isinstance(node, n.PipeNode):
        return [x for cmd in node.cmds for arg in cmd.args for x in identifiers(arg)]
    if isinstance(node, (n.FieldNode, n.VariableNode)):
        return list(node.ident)
    return []


def parse(src: str) -> Template:
    """Parse `src`; raises `TemplateError` naming the problem and its line and column."""
    if not isinstance(src, str):
        raise TemplateError(f"template must be a string, not {type(src).__name__}")
    try:
        root, defines = parse_tree(src, BUILTINS)
    except RecursionError:
        raise TemplateError("template nesting too deep") from None
    tmpl = Template(src, root, defines)
    tmpl.vars()  # Ollama rejects `{{template "x"}}` without a pipeline at parse time
    return tmpl


def render(src: str, values: Any, *, now: Optional[dt.datetime] = None) -> str:
    """Parse and execute in one step."""
    return parse(src).execute(values, now=now)
