"""The contextual lexer that feeds lark's LALR parser (see ``parser.py``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedToken
from lark.lexer import Lexer, LexerState


class _Token(Token):
    """lark's Token, built by the lexer below without going through ``Token.__new__``."""

    __slots__ = ()


class ContextualLexer(Lexer):
    """A contextual lexer for lark's LALR parser, as one tight loop.

    Same algorithm as lark's ``lexer="contextual"``: each parser state gets a scanner
    made of the terminals that state accepts (plus the ignored ones), tried in lark's
    priority order; a text that no scanner of the state matches is re-read with all
    terminals for the error message. lark's generic version goes through several
    layers per token (scanner objects, a line counter, keyword callbacks this grammar
    does not need); this one is plugged in through lark's custom-lexer interface and
    takes about a third of the time. Scanners are compiled on first use and shared by
    states that accept the same terminals; the big composite terminals that lead the
    priority order (SIMPLE_PAIR) are compiled once and tried on their own first, which
    is the same order and keeps each state's regex small.
    """

    __future_interface__ = 2  # lex(lexer_state, parser_state), lexer_state.text may be a slice
    # Where a value may start, (text, pos, line, line_start, value_stack) -> the end of an
    # expression starting at pos, or None to lex normally (set by the parser, see expr.py).
    expr_hook: Callable[[str, int, int, int, list], int | None] | None = None

    def __init__(self, conf: Any) -> None:
        self.terminals = {t.name: t for t in conf.terminals}
        self.ignore = frozenset(conf.ignore)
        self.flags = conf.g_regex_flags
        self.by_state: dict[Any, tuple] = {}  # state -> (leading, scan, takes_expr)
        self.by_names: dict[frozenset[str], tuple] = {}
        self.compiled: dict[str, Any] = {}
        self.root: Any = None  # all terminals, for error messages only
        self.newline_types = frozenset(
            t.name for t in conf.terminals
            if "\\n" in t.pattern.to_regexp() or "\n" in t.pattern.to_regexp()
        )

    def _scanner(self, accepts: Any) -> tuple:
        """(leading big terminals as (name, match), match of the alternation of the rest)."""
        names = frozenset(n for n in accepts if n in self.terminals) | self.ignore
        try:
            return self.by_names[names]
        except KeyError:
            pass
        terms = sorted(
            (self.terminals[n] for n in names),
            key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
        )
        leading = []
        while terms and len(terms[0].pattern.to_regexp()) > 300:
            t = terms.pop(0)
            if t.name not in self.compiled:
                self.compiled[t.name] = re.compile(t.pattern.to_regexp(), self.flags).match
            leading.append((t.name, self.compiled[t.name]))
        pattern = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terms)
        scanner = (tuple(leading), re.compile(pattern, self.flags).match)
        self.by_names[names] = scanner
        return scanner

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        source = lexer_state.text
        if isinstance(source, str):
            text, pos, end = source, 0, len(source)
        else:  # lark >= 1.3 hands over a TextSlice
            text, pos, end = source.text, source.start, source.end
        line, line_start = 1, 0
        by_state = self.by_state
        states = parser_state.parse_conf.states
        stack = parser_state.state_stack
        ignore = self.ignore
        newline_types = self.newline_types
        new_str = str.__new__
        expr_hook = self.expr_hook
        while pos < end:
            state = stack[-1]
            try:
                leading, scan, takes_expr = by_state[state]
            except KeyError:
                accepts = states[state]
                leading, scan = self._scanner(accepts)
                takes_expr = "EXPR" in accepts and expr_hook is not None
                by_state[state] = (leading, scan, takes_expr)
            if takes_expr and expr_hook is not None:
                expr_end = expr_hook(text, pos, line, line_start, parser_state.value_stack)
                if expr_end is not None:
                    value = text[pos:expr_end]
                    tok = new_str(_Token, value)
                    tok.type = "EXPR"
                    tok.value = value
                    tok.start_pos = pos
                    tok.line = line
                    tok.column = pos - line_start + 1
                    tok.end_line = tok.end_column = tok.end_pos = None
                    breaks = value.count("\n")
                    if breaks:
                        line += breaks
                        line_start = pos + value.rindex("\n") + 1
                    pos = expr_end
                    yield tok
                    continue
            for kind, match in leading:
                m = match(text, pos, end)
                if m is not None:
                    break
            else:
                m = scan(text, pos, end)
                if m is None:
                    self._fail(text, pos, end, line, pos - line_start + 1, parser_state)
                kind = m.lastgroup
            value = m.group()
            if kind not in ignore:
                # Token(...) goes through two Python-level constructors; this is the
                # same object built directly, at a third of the cost.
                tok = new_str(_Token, value)
                tok.type = kind
                tok.value = value
                tok.start_pos = pos
                tok.line = line
                tok.column = pos - line_start + 1
                tok.end_line = tok.end_column = tok.end_pos = None
                if kind in newline_types:
                    breaks = value.count("\n")
                    if breaks:
                        line += breaks
                        line_start = pos + value.rindex("\n") + 1
                pos += len(value)
                yield tok
            else:
                pos += len(value)

    def _fail(self, text: str, pos: int, end: int, line: int, column: int,
              parser_state: Any) -> NoReturn:
        accepts = {n for n in parser_state.parse_conf.states[parser_state.position]
                   if n in self.terminals}
        if self.root is None:
            self.root = self._scanner(self.terminals)
        leading, scan = self.root
        for kind, match in leading:
            m = match(text, pos, end)
            if m is not None:
                break
        else:
            m = scan(text, pos, end)
            kind = m.lastgroup if m is not None else None
        if m is not None and kind not in self.ignore:
            tok = Token(kind, m.group(), pos, line, column)
            raise UnexpectedToken(tok, accepts, state=parser_state)
        raise UnexpectedCharacters(text, pos, line, column, allowed=accepts, state=parser_state)

