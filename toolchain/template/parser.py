"""Go text/template grammar: tokens to a tree of `toolchain.template.nodes`.

Checks what Go checks while parsing: functions must exist, variables must be declared in an
enclosing scope, `break`/`continue` only inside `range`, `define` only at the top level, every
control structure closed by `{{end}}`, and the first command of a pipeline is the only one that
may be a plain value.
"""

from __future__ import annotations

import re
from typing import Collection, Optional

from toolchain.template import nodes as n
from toolchain.template.errors import TemplateError, position, quote
from toolchain.template.lexer import Token, lex
from toolchain.template.literals import parse_number, unquote

_OPERAND_START = {"bool", "char", "dot", "field", "ident", "number", "string", "variable", "lparen"}


class _Parser:
    def __init__(self, src: str, funcs: Collection[str]) -> None:
        self.src = src
        self.funcs = funcs
        self.tokens = lex(src)
        self.i = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.defines: dict[str, n.ListNode] = {}

    # -- token helpers -------------------------------------------------------------------------

    def fail(self, reason: str, pos: int) -> TemplateError:
        line, col = position(self.src, pos)
        return TemplateError(reason, line, col)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def peek_non_space(self) -> Token:
        while self.tokens[self.i].kind == "space":
            self.i += 1
        return self.tokens[self.i]

    def next_non_space(self) -> Token:
        self.peek_non_space()
        return self.next()

    def unexpected(self, tok: Token, context: str) -> TemplateError:
        if tok.kind == "eof":
            return self.fail(f"unexpected EOF in {context}", tok.pos)
        if tok.kind == "right":
            return self.fail(f"unexpected \"}}}}\" in {context}", tok.pos)
        return self.fail(f"unexpected {quote(tok.value)} in {context}", tok.pos)

    def expect_right(self, context: str) -> Token:
        tok = self.next_non_space()
        if tok.kind != "right":
            raise self.unexpected(tok, context)
        return tok

    # -- top level -----------------------------------------------------------------------------

    def parse(self) -> n.ListNode:
        root = n.ListNode(pos=0)
        while self.peek().kind != "eof":
            if self.peek().kind == "left":
                save = self.i
                self.next()
                kw = self.next_non_space()
                if kw.kind == "keyword" and kw.value == "define":
                    self.define(kw)
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                raise self.fail(f"unexpected {{{{{node.word}}}}}", node.pos)
            root.nodes.append(node)
        return root

    def add_template(self, name: str, body: n.ListNode, pos: int) -> None:
        old = self.defines.get(name)
        if old is not None and not _is_empty(old) and not _is_empty(body):
            raise self.fail(f"multiple definition of template {quote(name)}", pos)
        if old is None or _is_empty(old):
            self.defines[name] = body

    def define(self, kw: Token) -> None:
        context = "define clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        self.expect_right(context)
        self.add_template(name, self.template_body(context), kw.pos)

    def template_body(self, context: str) -> n.ListNode:
        """The body of a {{define}} or {{block}} up to its {{end}}, in a scope of its own (only `$`)."""
        outer_vars, outer_depth = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self.item_list(context)
        if not isinstance(end, _End):
            raise self.fail(f"unexpected {{{{else}}}} in {context}", end.pos)
        self.vars, self.range_depth = outer_vars, outer_depth
        return body

    def template_name(self, tok: Token, context: str) -> str:
        if tok.kind != "string":
            raise self.unexpected(tok, context)
        return unquote(tok.value, lambda reason: self.fail(reason, tok.pos))

    def item_list(self, context: str) -> tuple[n.ListNode, "_End | _Else"]:
        lst = n.ListNode(pos=self.peek().pos)
        while self.peek().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return lst, node
            lst.nodes.append(node)
        raise self.fail(f"unexpected EOF: missing {{{{end}}}} for {context}", self.peek().pos)

    def text_or_action(self):
        tok = self.next()
        if tok.kind == "text":
            return n.TextNode(tok.value, tok.pos)
        if tok.kind == "left":
            return self.action()
        raise self.unexpected(tok, "input")

    # -- actions -------------------------------------------------------------------------------

    def action(self):
        tok = self.next_non_space()
        if tok.kind == "keyword":
            word = tok.value
            if word == "if":
                return self.control(n.IfNode, "if", tok)
            if word == "range":
                return self.control(n.RangeNode, "range", tok)
            if word == "with":
                return self.control(n.WithNode, "with", tok)
            if word == "else":
                nxt = self.peek_non_space()
                if nxt.kind == "keyword" and nxt.value in ("if", "with"):
                    return _Else(tok.pos, chained=nxt.value)
                self.expect_right("else")
                return _Else(tok.pos)
            if word == "end":
                self.expect_right("end")
                return _End(tok.pos)
            if word in ("break", "continue"):
                self.expect_right(word)
                if not self.range_depth:
                    raise self.fail(f"{{{{{word}}}}} outside {{{{range}}}}", tok.pos)
                return n.BreakNode(tok.pos) if word == "break" else n.ContinueNode(tok.pos)
            if word == "template":
                return self.template_call(tok)
            if word == "block":
                return self.block(tok)
            if word == "define":
                raise self.fail("unexpected {{define}}: define is only allowed at the top level", tok.pos)
        self.i -= 1
        return n.ActionNode(self.pipeline("command", "right"), tok.pos)

    def control(self, cls, context: str, kw: Token):
        mark = len(self.vars)
        pipe = self.pipeline(context, "right")
        if context == "range":
            self.range_depth += 1
        body, end = self.item_list(context)
        if context == "range":
            self.range_depth -= 1
        else_list: Optional[n.ListNode] = None
        if isinstance(end, _Else):
            if end.chained:
                if end.chained != context:
                    raise self.fail(f"{{{{else {end.chained}}}}} inside {{{{{context}}}}}", end.pos)
                inner_kw = self.next_non_space()
                else_list = n.ListNode([self.control(cls, context, inner_kw)], pos=end.pos)
            else:
                else_list, end2 = self.item_list(context)
                if not isinstance(end2, _End):
                    raise self.fail(f"expected {{{{end}}}}; found {{{{else}}}}", end2.pos)
        del self.vars[mark:]
        return cls(pipe, body, else_list, pos=kw.pos)

    def template_call(self, kw: Token) -> n.TemplateNode:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.peek_non_space().kind != "right":
            pipe = self.pipeline(context, "right")
        else:
            self.next()
        return n.TemplateNode(name, pipe, kw.pos)

    def block(self, kw: Token) -> n.TemplateNode:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, "right")
        self.add_template(name, self.template_body(context), kw.pos)
        return n.TemplateNode(name, pipe, kw.pos)

    # -- pipelines -----------------------------------------------------------------------------

    def pipeline(self, context: str, end: str) -> n.PipeNode:
        start = self.peek_non_space()
        pipe = n.PipeNode(decl=[], cmds=[], pos=start.pos)
        self.declarations(pipe, context)
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                self.check_pipeline(pipe, context, tok)
                return pipe
            if tok.kind in _OPERAND_START or (tok.kind == "keyword" and tok.value == "nil"):
                self.i -= 1
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def declarations(self, pipe: n.PipeNode, context: str) -> None:
        while True:
            v = self.peek_non_space()
            if v.kind != "variable":
                return
            save = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt.kind in ("assign", "declare"):
                self.next()
                pipe.is_assign = nxt.kind == "assign"
                pipe.decl.append(n.VariableNode([v.value], v.pos))
                self.vars.append(v.value)
                return
            if nxt.kind == "comma":
                self.next()
                pipe.decl.append(n.VariableNode([v.value], v.pos))
                self.vars.append(v.value)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in ("variable", "right", "rparen"):
                        continue
                    raise self.fail("range can only initialize variables", nxt.pos)
                raise self.fail(f"too many declarations in {context}", nxt.pos)
            self.i = save
            return

    def check_pipeline(self, pipe: n.PipeNode, context: str, tok: Token) -> None:
        if not pipe.cmds:
            raise self.fail(f"missing value for {context}", tok.pos)
        for stage, cmd in enumerate(pipe.cmds[1:], start=2):
            if isinstance(cmd.args[0], n.BoolNode | n.DotNode | n.NilNode | n.NumberNode | n.StringNode):
                raise self.fail(f"non executable command in pipeline stage {stage}", cmd.pos)

    def command(self) -> n.CommandNode:
        cmd = n.CommandNode(args=[], pos=self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("right", "rparen"):
                self.i -= 1
            elif tok.kind != "pipe":
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.fail("empty command", cmd.pos)
        return cmd

    def operand(self):
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == "field":
            fields: list[str] = []
            pos = self.peek().pos
            while self.peek().kind == "field":
                fields.append(self.next().value[1:])
            if isinstance(node, n.FieldNode):
                return n.FieldNode(node.ident + fields, node.pos)
            if isinstance(node, n.VariableNode):
                return n.VariableNode(node.ident + fields, node.pos)
            if isinstance(node, n.BoolNode | n.StringNode | n.NumberNode | n.NilNode | n.DotNode):
                raise self.fail("unexpected . after term", pos)
            return n.ChainNode(node, fields, node.pos)
        return node

    def term(self):
        tok = self.next_non_space()
        kind = tok.kind
        if kind == "ident":
            if tok.value not in self.funcs:
                raise self.fail(f"function {quote(tok.value)} not defined", tok.pos)
            return n.IdentifierNode(tok.value, tok.pos)
        if kind == "dot":
            return n.DotNode(tok.pos)
        if kind == "keyword" and tok.value == "nil":
            return n.NilNode(tok.pos)
        if kind == "variable":
            if tok.value not in self.vars:
                raise self.fail(f"undefined variable {quote(tok.value)}", tok.pos)
            return n.VariableNode([tok.value], tok.pos)
        if kind == "field":
            return n.FieldNode([tok.value[1:]], tok.pos)
        if kind == "bool":
            return n.BoolNode(tok.value == "true", tok.pos)
        if kind in ("number", "char"):
            value = parse_number(tok.value, kind == "char", lambda reason: self.fail(reason, tok.pos))
            return n.NumberNode(value, tok.value, tok.pos)
        if kind == "string":
            return n.StringNode(unquote(tok.value, lambda reason: self.fail(reason, tok.pos)), tok.value, tok.pos)
        if kind == "lparen":
            return self.pipeline("parenthesized pipeline", "rparen")
        self.i -= 1
        return None


class _End:
    word = "end"

    def __init__(self, pos: int) -> None:
        self.pos = pos


class _Else:
    word = "else"

    def __init__(self, pos: int, chained: str = "") -> None:
        self.pos = pos
        self.chained = chained


_SPACE_ONLY = re.compile(r"[ \t\r\n]*")


def _is_empty(lst: n.ListNode) -> bool:
    return all(isinstance(x, n.TextNode) and _SPACE_ONLY.fullmatch(x.text) for x in lst.nodes)


def parse_tree(src: str, funcs: Collection[str]) -> tuple[n.ListNode, dict[str, n.ListNode]]:
    """(main tree, defined templates by name) of `src`; raises `TemplateError`."""
    parser = _Parser(src, funcs)
    root = parser.parse()
    return root, parser.defines
