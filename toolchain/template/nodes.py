"""The parse tree of a template, shaped like Go's text/template/parse nodes.

Code that inspects templates the way Ollama does (which variables a template uses, the text
after `.ToolCalls`, cutting everything after `.Response`) walks these nodes.
`pos` is the character offset of the node in the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union


@dataclass
class TextNode:
    text: str
    pos: int = 0


@dataclass
class FieldNode:
    """`.A.B`: the field chain applied to dot."""

    ident: list[str]
    pos: int = 0


@dataclass
class VariableNode:
    """`$x.A.B`: ident[0] is the variable name (`$` or `$x`), the rest a field chain."""

    ident: list[str]
    pos: int = 0


@dataclass
class ChainNode:
    """`(pipeline).A.B`: fields applied to a non-field, non-variable operand."""

    node: "Node"
    fields: list[str]
    pos: int = 0


@dataclass
class DotNode:
    pos: int = 0


@dataclass
class NilNode:
    pos: int = 0


@dataclass
class BoolNode:
    value: bool
    pos: int = 0


@dataclass
class NumberNode:
    """A numeric (or character) constant: value is an int or a float, text its source."""

    value: Union[int, float]
    text: str
    pos: int = 0


@dataclass
class StringNode:
    value: str
    quoted: str
    pos: int = 0


@dataclass
class IdentifierNode:
    """A function name."""

    name: str
    pos: int = 0


@dataclass
class CommandNode:
    args: list["Node"]
    pos: int = 0


@dataclass
class PipeNode:
    """`$x := a | b c`: decl holds declared (or, with is_assign, assigned) variables."""

    decl: list[VariableNode]
    cmds: list[CommandNode]
    is_assign: bool = False
    pos: int = 0


@dataclass
class ActionNode:
    pipe: PipeNode
    pos: int = 0


@dataclass
class ListNode:
    nodes: list["Node"] = field(default_factory=list)
    pos: int = 0


@dataclass
class BranchNode:
    """Common shape of if / range / with."""

    pipe: PipeNode
    list: ListNode
    else_list: Optional[ListNode] = None
    pos: int = 0


class IfNode(BranchNode):
    pass


class RangeNode(BranchNode):
    pass


class WithNode(BranchNode):
    pass


@dataclass
class BreakNode:
    pos: int = 0


@dataclass
class ContinueNode:
    pos: int = 0


@dataclass
class TemplateNode:
    """`{{template "name" pipeline}}` (pipe is None without a pipeline)."""

    name: str
    pipe: Optional[PipeNode]
    pos: int = 0


Node = Any  # any of the classes above


def children(node: Node) -> Iterator[Node]:
    """The direct child nodes of `node`, in source order."""
    if isinstance(node, ListNode):
        yield from node.nodes
    elif isinstance(node, BranchNode):
        yield node.pipe
        yield node.list
        if node.else_list is not None:
            yield node.else_list
    elif isinstance(node, ActionNode):
        yield node.pipe
    elif isinstance(node, PipeNode):
        yield from node.decl
        yield from node.cmds
    elif isinstance(node, CommandNode):
        yield from node.args
    elif isinstance(node, ChainNode):
        yield node.node
    elif isinstance(node, TemplateNode) and node.pipe is not None:
        yield node.pipe


def walk(node: Node) -> Iterator[Node]:
    """`node` and all its descendants, depth first in source order."""
    yield node
    for child in children(node):
        yield from walk(child)
