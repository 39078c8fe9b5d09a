"""Expressions: operators, function calls and arithmetic in a value, read straight from the text.

The lexer (``lexer.py``) hands a value over to :func:`parse_expression` when it starts
like an expression (``@name``, ``name(``, ``!``, ``(``) or its line holds an operator
(``+ - * / %`` between blanks, ``&&``, ``||``); the grammar then sees the whole value
as one ``EXPR`` token. Precedence, lowest first::

    c ? a : b   ||   &&   == != < > <= >=   + -   * / %   ! -x   calls, .name(...)

Inside ``( )``, ``[ ]`` and ``{ }`` line breaks and comments are blanks. ``$name``,
``${a.b}`` and ``"${...}"`` read globals and keys defined earlier (``lookup``); a bare
word that names such a key reads it too, any other bare word is a string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

from tusk_events.defaults import EXPRESSION_DEPTH
from tusk_events.lang.operators import (
    Binary,
    Call,
    Cond,
    ListNode,
    Lit,
    Node,
    ObjNode,
    Unary,
    Word,
)
from tusk_events.lang.values import KEYWORDS, number

_BLANKS = re.compile(r"[ \t\f\v]*")
_BLANKS_NL = re.compile(r"(?:[ \t\f\v\n]|#[^\n]*)*")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_SQSTRING = re.compile(r"'(?:[^'\\\n]|\\.)*'")
_STRING_ML = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SQSTRING_ML = re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL)
_TRIPLE = re.compile(r"'''(?:(?!''').)*'''|\"\"\"(?:(?!\"\"\").)*\"\"\"", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?(?![\w.\/~@%])")
_OPERATOR = re.compile(r"@([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_CALL = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\(")
_VAR = re.compile(r"\$\{[ \t]*([\w-]+(?:\.[\w-]+)*)[ \t]*\}|\$([\w-]+(?:\.[\w-]+)*)")
_WORD = re.compile(r"[\w.\/~][\w.\/~@%-]*")
_KEY = re.compile(r"[\w-]+|\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'")
_NAME = re.compile(r"[A-Za-z_]\w*")
_NAMED_ARG = re.compile(r"([A-Za-z_]\w*)[ \t]*(?::(?!:|//)|=(?!=))")
_BINARY = re.compile(r"&&|\|\|?|==|!=|<=|>=|[<>+*/%?-]")
_PRECEDENCE = {"||": 1, "|": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, ">": 3, "<=": 3, ">=": 3,
               "+": 4, "-": 4, "*": 5, "/": 5, "%": 5}

# Does a value start like an expression, or hold an operator on its line? (see lexer.py)
STARTS = re.compile(r"@[A-Za-z_]|[A-Za-z_][\w.]*\(|!(?!=)|\(")
HAS_OPERATOR = re.compile(
    r"""(?:[^\n#"'&|]|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')*?"""
    r"""(?:[ \t](?:[-+*/%]|[=!<>]=|[<>])[ \t]|&&|\|\|)"""
)
_MAX_DEPTH = EXPRESSION_DEPTH


class Source:
    """The hooks the parser lends: string decoding, variable and key lookup, failing."""

    def __init__(self, text: str, *,
                 fail: Callable[[str, int, int], NoReturn],
                 double_quoted: Callable[[str, int, int], Any],
                 single_quoted: Callable[[str], str],
                 lookup: Callable[[str, int, int], Any],
                 key_value: Callable[[str], tuple[bool, Any]]) -> None:
        self.text = text
        self.fail_at = fail
        self.double_quoted = double_quoted
        self.single_quoted = single_quoted
        self.lookup = lookup
        self.key_value = key_value


class _Parser:
    def __init__(self, src: Source, pos: int, line: int, line_start: int) -> None:
        self.src = src
        self.text = src.text
        self.pos = pos
        self.line = line  # line number at offset line_start
        self.line_start = line_start
        self.nest = 0  # open ( [ {: line breaks are blanks inside
        self.token_end = pos
        self.depth = 0
        self.operators: list[tuple[str, int, int]] = []

    # ---- positions ------------------------------------------------------------------

    def where(self, pos: int) -> tuple[int, int]:
        """(line, column) of ``pos`` (counted forward from the last position asked for)."""
        if pos < self.line_start:
            self.line -= self.text.count("\n", pos, self.line_start)
            self.line_start = self.text.rfind("\n", 0, pos) + 1
        breaks = self.text.count("\n", self.line_start, pos)
        if breaks:
            self.line += breaks
            self.line_start = self.text.rfind("\n", 0, pos) + 1
        return self.line, pos - self.line_start + 1

    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        line, column = self.where(self.pos if pos is None else pos)
        self.src.fail_at(message, line, column)

    def found(self) -> str:
        rest = self.text[self.pos:self.pos + 20].split("\n", 1)[0]
        return repr(rest) if rest.strip() else "line break"

    def blanks(self) -> None:
        regex = _BLANKS_NL if self.nest else _BLANKS
        m = regex.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def expect(self, s: str, what: str) -> None:
        self.blanks()
        if not self.peek(s):
            self.fail(f"expected {what}, found {self.found()}")
        self.pos += len(s)

    # ---- grammar --------------------------------------------------------------------

    def expression(self) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            self.fail("the expression nests too deeply")
        test = self.binary(1)
        self.blanks()
        if self.peek("?"):
            line, column = self.where(self.pos)
            self.pos += 1
            then = self.expression()
            self.blanks()
            if not self.peek(":"):
                self.fail(f"expected ':' in the conditional (cond ? a : b), found {self.found()}")
            self.pos += 1
            other = self.expression()
            test = Cond(test, then, other, line, column)
        self.depth -= 1
        return test

    def binary(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            self.blanks()
            m = _BINARY.match(self.text, self.pos)
            if m is None:
                return left
            op = m.group()
            prec = _PRECEDENCE.get(op)
            if prec is None or prec < min_prec:
                return left
            line, column = self.where(self.pos)
            self.pos = m.end()
            right = self.binary(prec + 1)
            left = Binary("||" if op == "|" else op, left, right, line, column)

    def unary(self) -> Node:
        self.blanks()
        text = self.text
        pos = self.pos
        if text.startswith("!", pos) and not text.startswith("!=", pos):
            line, column = self.where(pos)
            self.pos += 1
            return Unary("!", self.unary(), line, column)
        if text.startswith("-", pos) and pos + 1 < len(text) and text[pos + 1] in "$@(":
            line, column = self.where(pos)
            self.pos += 1
            return Unary("-", self.unary(), line, column)
        node = self.postfix(self.primary())
        self.token_end = self.pos  # where the last value token ended (blanks come after)
        return node

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek("["):  # value[index]
                line, column = self.where(self.pos)
                self.pos += 1
                self.nest += 1
                index = self.expression()
                self.expect("]", "']' after the index")
                self.nest -= 1
                node = Call("[]", [index], line, column, target=node)
            elif self.peek("."):
                m = _NAME.match(self.text, self.pos + 1)
                if m is None:
                    return node
                line, column = self.where(self.pos)
                self.pos = m.end()
                args = self.arguments() if self.peek("(") else None
                node = Call(m.group(), args, line, column, target=node)
                self.operators.append((f".{m.group()}", line, column))
            else:
                return node

    def arguments(self, at: int | None = None) -> list[Node]:
        """``( a, b, ... )`` at self.pos; ``name: value`` arguments become one object.

        ``at``: where an ``@env`` call starts, for the messages an ``@env(`` call gets.
        """
        opened = self.pos
        self.pos += 1
        self.nest += 1
        args: list[Node] = []
        named: list[tuple[str, Node]] = []
        while True:
            self.blanks()
            if self.peek(")"):
                break
            m = _NAMED_ARG.match(self.text, self.pos)
            if m is not None:
                self.pos = m.end()
                named.append((m.group(1), self.expression()))
            else:
                args.append(self.expression())
            self.blanks()
            if self.peek(","):
                self.pos += 1
                continue
            if not self.peek(")"):
                if "\n" in self.text[opened:self.pos] or self.pos >= len(self.text):
                    if at is not None:
                        self.fail("unterminated @env( call", at)
                    self.fail("'(' of this call is never closed", opened)
                self.fail(f"expected ',' or ')' in the call, found {self.found()}")
        if at is not None and not args and not named:
            self.fail("expected the variable name in @env(...)")
        self.pos += 1
        self.nest -= 1
        if named:
            line, column = self.where(self.pos)
            args.append(ObjNode(named, line, column))
        return args

    def primary(self) -> Node:
        text = self.text
        pos = self.pos
        if pos >= len(text):
            self.fail("expected a value, found end of file")
        c = text[pos]
        line, column = self.where(pos)
        if c == '"' or c == "'":
            m = _TRIPLE.match(text, pos)
            if m is not None:
                self.pos = m.end()
                return Lit(m.group()[3:-3], line, column)
            if self.nest:  # inside a call or brackets a quoted string may span lines
                m = (_STRING_ML if c == '"' else _SQSTRING_ML).match(text, pos)
            else:
                m = (_STRING if c == '"' else _SQSTRING).match(text, pos)
            if m is None:
                self.fail("unterminated string")
            self.pos = m.end()
            raw = m.group()
            value = (self.src.double_quoted(raw, line, column) if c == '"'
                     else self.src.single_quoted(raw))
            return Lit(value, line, column)
        if c == "@":
            m = _OPERATOR.match(text, pos)
            if m is None:
                self.fail("expected an operator name after '@'")
            self.pos = m.end()
            name = m.group(1)
            args = self.arguments(pos if name == "env" else None) if self.peek("(") else None
            self.operators.append(("@" + name, line, column))
            return Call(name, args, line, column)
        if c == "$":
            m = _VAR.match(text, pos)
            if m is None:
                self.fail("expected a variable name after '$'")
            self.pos = m.end()
            return Lit(self.src.lookup(m.group(1) or m.group(2), line, column), line, column)
        if c == "(":
            self.pos += 1
            self.nest += 1
            node = self.expression()
            self.expect(")", "')'")
            self.nest -= 1
            return node
        if c == "[":
            return self.array(line, column)
        if c == "{":
            return self.obj(line, column)
        m = _NUMBER.match(text, pos)
        if m is not None:
            value = number(m.group())
            if value is None:
                self.fail(f"number {m.group()[:20]} is out of range")
            self.pos = m.end()
            return Lit(value, line, column)
        m = _CALL.match(text, pos)
        if m is not None:
            self.pos = m.end() - 1
            name = m.group(1)
            self.operators.append((name, line, column))
            return Call(name, self.arguments(), line, column, at=False)
        m = _WORD.match(text, pos)
        if m is not None:
            word = m.group()
            self.pos = m.end()
            if word in KEYWORDS:
                return Lit(KEYWORDS[word], line, column)
            known, value = self.src.key_value(word)
            return Lit(value, line, column) if known else Word(word, line, column)
        self.fail(f"expected a value, found {self.found()}")

    def array(self, line: int, column: int) -> Node:
        self.pos += 1
        self.nest += 1
        items: list[Node] = []
        while True:
            self.blanks()
            if self.peek("]"):
                break
            items.append(self.expression())
            after = self.token_end
            self.blanks()
            if self.peek(","):
                self.pos += 1
            elif not self.peek("]") and "\n" not in self.text[after:self.pos]:
                self.fail(f"expected ',' or ']' in array, found {self.found()}")
        self.pos += 1
        self.nest -= 1
        return ListNode(items, line, column)

    def obj(self, line: int, column: int) -> Node:
        self.pos += 1
        self.nest += 1
        pairs: list[tuple[str, Node]] = []
        seen: set[str] = set()
        while True:
            self.blanks()
            if self.peek("}"):
                break
            m = _KEY.match(self.text, self.pos)
            if m is None:
                self.fail(f"expected a key, found {self.found()}")
            raw = m.group()
            key_pos = self.pos
            if raw[0] == '"':
                key = self.src.double_quoted(raw, *self.where(key_pos))
            elif raw[0] == "'":
                key = self.src.single_quoted(raw)
            else:
                key = raw
            self.pos = m.end()
            self.blanks()
            if not (self.peek(":") or self.peek("=")):
                self.fail(f"expected ':' or '=' after key, found {self.found()}")
            self.pos += 1
            if key in seen:
                self.fail(f"duplicate key '{key}'", key_pos)
            seen.add(key)
            pairs.append((key, self.expression()))
            after = self.token_end
            self.blanks()
            if self.peek(","):
                self.pos += 1
            elif not self.peek("}") and "\n" not in self.text[after:self.pos]:
                self.fail(f"expected ',' or '}}' in object, found {self.found()}")
        self.pos += 1
        self.nest -= 1
        return ObjNode(pairs, line, column)


def parse_expression(src: Source, pos: int, line: int, line_start: int
                     ) -> tuple[Node, int, list[tuple[str, int, int]]]:
    """One expression starting at ``pos``: its node, where it ends, the operators it names."""
    parser = _Parser(src, pos, line, line_start)
    try:
        node = parser.expression()
    except RecursionError:
        parser.fail("the expression nests too deeply", pos)
    # the value ends here; blanks before a comment, ';' or the line break are not part of it
    end = parser.pos
    while end > pos and src.text[end - 1] in " \t":
        end -= 1
    return node, end, parser.operators
