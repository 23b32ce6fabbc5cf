"""Runs a parsed template over data, with Go text/template's semantics.

The data behaves like Ollama's `map[string]any` executed with `missingkey=zero`: a missing map
key is nil and prints as `<no value>`; a field of a nil value is an error. Dataclasses are Go
structs (unknown fields are errors). Maps range in sorted key order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any, Optional

from toolchain.template import nodes as n
from toolchain.template.errors import TemplateError, position, quote
from toolchain.template.funcs import BUILTINS, DATE_OFFSETS, date_string, truth
from toolchain.template.gofmt import GoError, format_value, kind, sorted_keys, type_name

MAX_TEMPLATE_DEPTH = 100
MAX_STEPS = 2_000_000  # nodes walked per execution: a hostile template must not hang a server
MAX_TEXT = 16 * 1024 * 1024  # characters of output, and of any one string a function returns


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()  # "no final argument from a previous pipeline stage"


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Fail(Exception):
    """A Go-level error at a node; turned into a positioned TemplateError at the top."""

    def __init__(self, reason: str, node: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node


class Executor:
    def __init__(self, src: str, defines: dict[str, n.ListNode], now: Optional[dt.datetime] = None) -> None:
        self.src = src
        self.defines = defines
        self.now = now
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.vars: list[list[Any]] = []
        self.depth = 0

    def run(self, root: n.ListNode, data: Any) -> str:
        self.vars = [["$", data]]
        try:
            self.walk(data, root)
        except _Fail as exc:
            line, col = position(self.src, getattr(exc.node, "pos", 0))
            raise TemplateError(exc.reason, line, col) from None
        except RecursionError:
            raise TemplateError("template nesting too deep to execute") from None
        return "".join(self.out)

    # -- variables ----------------------------------------------------------------------------

    def push(self, name: str, value: Any) -> None:
        self.vars.append([name, value])

    def set_var(self, name: str, value: Any, node: Any) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise _Fail(f"undefined variable: {name}", node)

    def var_value(self, name: str, node: Any) -> Any:
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        raise _Fail(f"undefined variable: {name}", node)

    # -- statements ---------------------------------------------------------------------------

    def emit(self, text: str, node: Any) -> None:
        self.size += len(text)
        if self.size > MAX_TEXT:
            raise _Fail(f"template output exceeds {MAX_TEXT} characters", node)
        self.out.append(text)

    def walk(self, dot: Any, node: Any) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Fail(f"template execution exceeds {MAX_STEPS} steps", node)
        if isinstance(node, n.ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, n.TextNode):
            self.emit(node.text, node)
        elif isinstance(node, n.ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.emit("<no value>" if value is None else format_value(value), node)
        elif isinstance(node, n.RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, n.BranchNode):  # if / with
            mark = len(self.vars)
            value = self.eval_pipeline(dot, node.pipe)
            if truth(value):
                self.walk(value if isinstance(node, n.WithNode) else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
            del self.vars[mark:]
        elif isinstance(node, n.BreakNode):
            raise _Break()
        elif isinstance(node, n.ContinueNode):
            raise _Continue()
        elif isinstance(node, n.TemplateNode):
            self.walk_template(dot, node)
        else:  # pragma: no cover - the parser makes no other statements
            raise _Fail(f"unknown node {type(node).__name__}", node)

    def walk_range(self, dot: Any, node: n.RangeNode) -> None:
        mark = len(self.vars)
        value = self.eval_pipeline(dot, node.pipe)
        decl = node.pipe.decl
        body_mark = len(self.vars)

        def iteration(key: Any, elem: Any) -> None:
            if decl:
                if node.pipe.is_assign:
                    self.set_var(decl[0].ident[0], key if len(decl) > 1 else elem, node)
                    if len(decl) > 1:
                        self.set_var(decl[1].ident[0], elem, node)
                else:
                    self.vars[-1][1] = elem
                    if len(decl) > 1:
                        self.vars[-2][1] = key
            try:
                self.walk(elem, node.list)
            except _Continue:
                pass
            finally:
                del self.vars[body_mark:]

        k = kind(value)
        ran = False
        try:
            if k == "slice":
                for i, elem in enumerate(value):
                    ran = True
                    iteration(i, elem)
            elif k == "map":
                for key in sorted_keys(value):
                    ran = True
                    iteration(key, value[key])
            elif k == "int":
                if len(decl) > 1:
                    raise _Fail(f"can't use {value} to iterate over more than one variable", node)
                for i in range(value):
                    ran = True
                    iteration(i, i)
            elif k != "nil":
                raise _Fail(f"range can't iterate over {format_value(value)}", node)
        except _Break:
            ran = True
        if not ran and node.else_list is not None:
            self.walk(dot, node.else_list)
        del self.vars[mark:]

    def walk_template(self, dot: Any, node: n.TemplateNode) -> None:
        body = self.defines.get(node.name)
        if body is None:
            raise _Fail(f"no such template {quote(node.name)}", node)
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        if self.depth >= MAX_TEMPLATE_DEPTH:
            raise _Fail(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})", node)
        saved = self.vars
        self.vars = [["$", new_dot]]
        self.depth += 1
        try:
            self.walk(new_dot, body)
        finally:
            self.depth -= 1
            self.vars = saved

    # -- expressions --------------------------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: n.PipeNode) -> Any:
        value: Any = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value, var)
            else:
                self.push(var.ident[0], value)
        return value

    def not_a_function(self, args: list, final: Any, node: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            raise _Fail(f"can't give argument to non-function {_show(args[0])}", node)

    def eval_command(self, dot: Any, cmd: n.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, n.FieldNode):
            return self.eval_field_chain(dot, dot, first, first.ident, cmd.args, final, from_dot=True)
        if isinstance(first, n.ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, n.IdentifierNode):
            return self.eval_function(dot, first, cmd.args, final)
        if isinstance(first, n.PipeNode):
            self.not_a_function(cmd.args, final, first)
            return self.eval_pipeline(dot, first)
        if isinstance(first, n.VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        self.not_a_function(cmd.args, final, first)
        if isinstance(first, n.BoolNode):
            return first.value
        if isinstance(first, n.DotNode):
            return dot
        if isinstance(first, n.NilNode):
            raise _Fail("nil is not a command", first)
        if isinstance(first, (n.NumberNode, n.StringNode)):
            return first.value
        raise _Fail(f"can't evaluate command {_show(first)}", first)  # pragma: no cover

    def eval_arg(self, dot: Any, node: Any) -> Any:
        if isinstance(node, n.DotNode):
            return dot
        if isinstance(node, n.NilNode):
            return None
        if isinstance(node, n.FieldNode):
            return self.eval_field_chain(dot, dot, node, node.ident, [node], MISSING, from_dot=True)
        if isinstance(node, n.VariableNode):
            return self.eval_variable(dot, node, [node], MISSING)
        if isinstance(node, n.PipeNode):
            return self.eval_pipeline(dot, node)
        if isinstance(node, n.IdentifierNode):
            return self.eval_function(dot, node, [node], MISSING)
        if isinstance(node, n.ChainNode):
            return self.eval_chain(dot, node, [node], MISSING)
        if isinstance(node, (n.BoolNode, n.NumberNode, n.StringNode)):
            return node.value
        raise _Fail(f"can't handle {_show(node)} as an argument", node)  # pragma: no cover

    def eval_variable(self, dot: Any, node: n.VariableNode, args: list, final: Any) -> Any:
        value = self.var_value(node.ident[0], node)
        if len(node.ident) == 1:
            self.not_a_function(args, final, node)
            return value
        return self.eval_field_chain(dot, value, node, node.ident[1:], args, final, from_dot=False)

    def eval_chain(self, dot: Any, node: n.ChainNode, args: list, final: Any) -> Any:
        if isinstance(node.node, n.NilNode):
            raise _Fail("indirection through explicit nil", node)
        receiver = self.eval_arg(dot, node.node)
        return self.eval_field_chain(dot, receiver, node, node.fields, args, final, from_dot=False)

    def eval_field_chain(self, dot: Any, receiver: Any, node: Any, ident: list[str], args: list, final: Any, *, from_dot: bool) -> Any:
        for i, name in enumerate(ident):
            last = i == len(ident) - 1
            if receiver is None and i == 0 and not from_dot:
                return None  # a nil variable: Go treats it as invalid and yields no value
            receiver = self.eval_field(name, node, args if last else None, final if last else MISSING, receiver)
        return receiver

    def eval_field(self, name: str, node: Any, args: Optional[list], final: Any, receiver: Any) -> Any:
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if receiver is None:
            raise _Fail(f"nil pointer evaluating interface {{}}.{name}", node)
        if isinstance(receiver, dict):
            if has_args:
                raise _Fail(f"{name} is not a method but has arguments", node)
            return receiver.get(name)
        if dataclasses.is_dataclass(receiver) and not name.startswith("_") and name in _field_names(receiver):
            if has_args:
                raise _Fail(f"{name} has arguments but cannot be invoked as function", node)
            return getattr(receiver, name)
        raise _Fail(f"can't evaluate field {name} in type {type_name(receiver)}", node)

    def eval_function(self, dot: Any, node: n.IdentifierNode, args: list, final: Any) -> Any:
        name = node.name
        spec = BUILTINS[name]
        given = len(args) - 1 + (final is not MISSING)
        if given < spec.min_args or (spec.max_args is not None and given > spec.max_args):
            if spec.max_args is None:
                want = f"at least {spec.min_args}"
            else:
                want = str(spec.min_args)
            raise _Fail(f"wrong number of args for {name}: want {want} got {given}", node)
        if name in ("and", "or"):
            value: Any = None
            for arg in args[1:]:
                value = self.eval_arg(dot, arg)
                if truth(value) == (name == "or"):
                    return value
            return final if final is not MISSING else value
        values = [self.eval_arg(dot, a) for a in args[1:]]
        if final is not MISSING:
            values.append(final)
        if spec.string_args:
            for v in values:
                if not isinstance(v, str):
                    raise _Fail(f"wrong type for value; expected string; got {type_name(v)}", node)
        try:
            if name in DATE_OFFSETS:
                return date_string(self.now or dt.datetime.now(), DATE_OFFSETS[name])
            result = spec.fn(*values)  # type: ignore[misc]
        except GoError as exc:
            raise _Fail(f"error calling {name}: {exc}", node) from None
        if isinstance(result, str) and len(result) > MAX_TEXT:
            raise _Fail(f"error calling {name}: result exceeds {MAX_TEXT} characters", node)
        return result


def _field_names(obj: Any) -> frozenset[str]:
    return _class_fields(type(obj))


@functools.lru_cache(maxsize=256)
def _class_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _show(node: Any) -> str:
    if isinstance(node, n.FieldNode):
        return "." + ".".join(node.ident)
    if isinstance(node, n.VariableNode):
        return ".".join(node.ident)
    if isinstance(node, n.StringNode):
        return node.quoted
    if isinstance(node, n.NumberNode):
        return node.text
    if isinstance(node, n.BoolNode):
        return "true" if node.value else "false"
    if isinstance(node, n.DotNode):
        return "."
    if isinstance(node, n.NilNode):
        return "nil"
    if isinstance(node, n.IdentifierNode):
        return node.name
    return type(node).__name__
