"""Tokens of Go's text/template: text between `{{ }}` actions, and the words inside them.

Follows the Go lexer's rules: `{{- ` trims the whitespace before an action and ` -}}` the
whitespace after it (the dash must be separated by a space), `{{/* */}}` is a comment,
newlines may appear inside actions, and spaces are tokens (they separate arguments and decide
whether `$x.Field` is one operand or two).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.template.errors import TemplateError, position, quote

LEFT, RIGHT = "{{", "}}"
SPACE_CHARS = " \t\r\n"
KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil", "template", "with"}


@dataclass(frozen=True)
class Token:
    kind: str  # text, left, right, space, ident, keyword, field, variable, string, char,
    #            number, bool, dot, pipe, lparen, rparen, declare, assign, comma, eof
    value: str
    pos: int


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalnum()


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0
        self.tokens: list[Token] = []

    def fail(self, reason: str, at: int | None = None) -> TemplateError:
        line, col = position(self.src, self.pos if at is None else at)
        return TemplateError(reason, line, col)

    def emit(self, kind: str, value: str, pos: int) -> None:
        self.tokens.append(Token(kind, value, pos))

    def run(self) -> list[Token]:
        src = self.src
        while self.pos < len(src):
            i = src.find(LEFT, self.pos)
            if i < 0:
                self.emit("text", src[self.pos :], self.pos)
                self.pos = len(src)
                break
            after = i + len(LEFT)
            trim_left = src.startswith("-", after) and src[after + 1 : after + 2] in tuple(SPACE_CHARS)
            text = src[self.pos : i]
            if trim_left:
                text = text.rstrip(SPACE_CHARS)
            if text:
                self.emit("text", text, self.pos)
            self.pos = after + (2 if trim_left else 0)
            self.action(i)
        self.emit("eof", "", len(src))
        return self.tokens

    def at_right(self) -> tuple[bool, bool]:
        """(at a right delimiter, it carries a trim marker)."""
        s = self.src
        p = self.pos
        if p + 1 < len(s) and s[p] in SPACE_CHARS and s[p + 1] == "-" and s.startswith(RIGHT, p + 2):
            return True, True
        return s.startswith(RIGHT, p), False

    def close_action(self, trim: bool) -> None:
        self.pos += (2 if trim else 0) + len(RIGHT)
        if trim:
            while self.pos < len(self.src) and self.src[self.pos] in SPACE_CHARS:
                self.pos += 1

    def action(self, start: int) -> None:
        s = self.src
        if s.startswith("/*", self.pos):
            end = s.find("*/", self.pos + 2)
            if end < 0:
                raise self.fail("unclosed comment", start)
            self.pos = end + 2
            is_right, trim = self.at_right()
            if not is_right:
                raise self.fail("comment ends before closing delimiter", start)
            self.close_action(trim)
            return
        self.emit("left", LEFT, start)
        depth = 0
        while True:
            is_right, trim = self.at_right()
            if is_right:
                if depth:
                    raise self.fail("unclosed left paren")
                self.emit("right", RIGHT, self.pos)
                self.close_action(trim)
                return
            if self.pos >= len(s):
                raise self.fail("unclosed action", start)
            c = s[self.pos]
            begin = self.pos
            if c in SPACE_CHARS:
                while self.pos < len(s) and s[self.pos] in SPACE_CHARS:
                    self.pos += 1
                # a space that starts " -}}" belongs to the delimiter
                if s.startswith("-" + RIGHT, self.pos) and s[self.pos - 1] in SPACE_CHARS:
                    self.pos -= 1
                    if self.pos == begin:
                        continue
                self.emit("space", s[begin : self.pos], begin)
            elif c == "=":
                self.pos += 1
                self.emit("assign", "=", begin)
            elif c == ":":
                if not s.startswith(":=", self.pos):
                    raise self.fail("expected :=")
                self.pos += 2
                self.emit("declare", ":=", begin)
            elif c == "|":
                self.pos += 1
                self.emit("pipe", "|", begin)
            elif c == ",":
                self.pos += 1
                self.emit("comma", ",", begin)
            elif c == '"':
                self.quoted(begin)
            elif c == "`":
                end = s.find("`", self.pos + 1)
                if end < 0:
                    raise self.fail("unterminated raw quoted string")
                self.pos = end + 1
                self.emit("string", s[begin : self.pos], begin)
            elif c == "'":
                self.char(begin)
            elif c == "$":
                self.pos += 1
                self.word()
                self.terminated()
                self.emit("variable", s[begin : self.pos], begin)
            elif c == "." and not (self.pos + 1 < len(s) and s[self.pos + 1].isdigit()):
                self.pos += 1
                if self.pos < len(s) and _is_alnum(s[self.pos]):
                    self.word()
                    self.terminated()
                    self.emit("field", s[begin : self.pos], begin)
                else:
                    self.emit("dot", ".", begin)
            elif c in "+-." or c.isdigit():
                self.number(begin)
            elif _is_alnum(c):
                self.word()
                self.terminated()
                word = s[begin : self.pos]
                if word in KEYWORDS:
                    self.emit("keyword", word, begin)
                elif word in ("true", "false"):
                    self.emit("bool", word, begin)
                else:
                    self.emit("ident", word, begin)
            elif c == "(":
                depth += 1
                self.pos += 1
                self.emit("lparen", "(", begin)
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise self.fail("unexpected right paren")
                self.pos += 1
                self.emit("rparen", ")", begin)
            else:
                raise self.fail(f"unrecognized character in action: {quote(c)}")

    def word(self) -> None:
        while self.pos < len(self.src) and _is_alnum(self.src[self.pos]):
            self.pos += 1

    def terminated(self) -> None:
        s = self.src
        if self.pos >= len(s):
            return
        c = s[self.pos]
        if c in SPACE_CHARS or c in ".,|:()" or s.startswith(RIGHT, self.pos):
            return
        raise self.fail(f"bad character {quote(c)}")

    def quoted(self, begin: int) -> None:
        s = self.src
        self.pos += 1
        while True:
            if self.pos >= len(s) or s[self.pos] == "\n":
                raise self.fail("unterminated quoted string", begin)
            c = s[self.pos]
            self.pos += 1
            if c == "\\":
                if self.pos >= len(s) or s[self.pos] == "\n":
                    raise self.fail("unterminated quoted string", begin)
                self.pos += 1
            elif c == '"':
                break
        self.emit("string", s[begin : self.pos], begin)

    def char(self, begin: int) -> None:
        s = self.src
        self.pos += 1
        while True:
            if self.pos >= len(s) or s[self.pos] == "\n":
                raise self.fail("unterminated character constant", begin)
            c = s[self.pos]
            self.pos += 1
            if c == "\\":
                self.pos += 1
            elif c == "'":
                break
        self.emit("char", s[begin : self.pos], begin)

    def number(self, begin: int) -> None:
        s = self.src
        if s[self.pos] in "+-":
            self.pos += 1
        digits = "0123456789_"
        if s.startswith(("0x", "0X"), self.pos):
            self.pos += 2
            digits = "0123456789abcdefABCDEF_"
        elif s.startswith(("0o", "0O"), self.pos):
            self.pos += 2
            digits = "01234567_"
        elif s.startswith(("0b", "0B"), self.pos):
            self.pos += 2
            digits = "01_"
        self._run(digits)
        if self.pos < len(s) and s[self.pos] == ".":
            self.pos += 1
            self._run(digits)
        exp = "pP" if "f" in digits else "eE"
        if self.pos < len(s) and s[self.pos] in exp:
            self.pos += 1
            if self.pos < len(s) and s[self.pos] in "+-":
                self.pos += 1
            self._run("0123456789_")
        if self.pos < len(s) and s[self.pos] == "i":
            self.pos += 1
        if self.pos < len(s) and _is_alnum(s[self.pos]) or self.pos == begin + (s[begin] in "+-"):
            self.pos += 1
            raise self.fail(f"bad number syntax: {quote(s[begin : self.pos])}", begin)
        self.emit("number", s[begin : self.pos], begin)

    def _run(self, chars: str) -> None:
        while self.pos < len(self.src) and self.src[self.pos] in chars:
            self.pos += 1


def lex(src: str) -> list[Token]:
    """All tokens of `src`, ending with an `eof` token; raises `TemplateError`."""
    return _Lexer(src).run()
