"""The first gate for SQL that fujsen send through ``query()``/``execute()``.

Fujsen SQL is untrusted: a config author writes it, and it runs against the store. What this
module enforces, on both backends, before the database sees the text:

1. **Placeholders only.** Values travel as parameters bound to ``?``; the number of ``?`` must
   match the number of values. Other parameter styles (``?1``, ``:name``, ``@name``,
   ``$name``, ``$1``) are refused, so ``?`` is the one convention that works everywhere.
2. **One statement.** A ``;`` may only end the text; a second statement is refused.
3. **Statement allowlist.** The first keyword must be SELECT, INSERT, UPDATE, DELETE or WITH.
4. **No hidden writes.** INSERT/UPDATE/DELETE/MERGE may only be the top-level verb: inside
   parentheses (a data-modifying CTE ``WITH x AS (DELETE ...)``, which PostgreSQL would run)
   they are refused, so a WITH statement writes only through its main verb, as on SQLite.
   ``FOR UPDATE`` row locks stay allowed. ``INTO`` is allowed only in INSERT (``SELECT ... INTO``
   creates a table on PostgreSQL).
5. **Denied names.** On both: ``tusk_schema``, ``tusk_tracking``, ``tusk_outbox``,
   ``tusk_meta`` and ``load_extension``; on SQLite also its
   schema tables (``sqlite_master``, ``sqlite_sequence``...) and the shell's file functions.
   On PostgreSQL: functions and views that could undo the sandbox's ``SET LOCAL ROLE`` or
   escape it (``set_config``, ``pg_settings``, the ``*_to_xml*`` family, ``ts_stat`` and
   ``ts_rewrite``, which run SQL given as text), leave state behind in the session or the
   database (advisory locks, large objects, ``pg_notify``), or reach the server's files and
   processes. Unicode-escaped names (``U&"..."``) are refused because they could spell any
   of them.

6. **No explicit ids.** An INSERT into ``event_store`` names its columns, and ``id`` is not one of them; an UPDATE
   of it does not set ``id``: the store assigns ids, and a row with the largest possible id would
   make every later append fail (the AUTOINCREMENT or sequence is exhausted).

Results are capped in rows *and* bytes while they are fetched (:func:`fetch_capped`), and a
statement's run time is capped by the store's timeout or the calling fujsen's remaining time
(:func:`statement_timeout`), whichever is shorter.

The scanner knows each dialect's quoting (strings, quoted identifiers, comments, and
PostgreSQL's ``E''`` and dollar-quoted strings), so a keyword inside a string literal is not
mistaken for code, and code is never mistaken for a literal. Anything it cannot read
unambiguously is refused. The databases then enforce the second gate: an authorizer on
SQLite, a low-privilege role on PostgreSQL (see the backends).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from tusk_events.defaults import (
    FUJSEN_SQL_FETCH_BATCH,
    FUJSEN_SQL_MAX_BYTES,
    FUJSEN_SQL_MAX_ROWS,
    FUJSEN_SQL_TIMEOUT_S,
)
from tusk_events.errors import StoreError

Dialect = Literal["sqlite", "postgresql"]


class SqlRefused(StoreError):
    """Fujsen SQL that the store will not run; the message names the rule.

    ``refused`` tells callers that catch :class:`StoreError` that the SQL itself was at fault
    (the sandbox reports it as a violation), not the database.
    """

    refused = True


def refuse(what: str, hint: str = "") -> SqlRefused:
    """The error for a refused construct: ``statement refused: ATTACH is not allowed ...``."""
    tail = f" ({hint})" if hint else ""
    return SqlRefused(f"statement refused: {what} is not allowed in fujsen SQL{tail}")


ALLOWED_FIRST = frozenset({"select", "insert", "update", "delete", "with"})
_DML = frozenset({"insert", "update", "delete", "merge"})
_VERBS = frozenset({"select", "insert", "update", "delete"})

_PG_DENIED_NAMES = frozenset(
    {
        "set_config",
        "pg_settings",
        "ts_stat",
        "ts_rewrite",
        "pg_notify",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_reload_conf",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_rotate_logfile",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_logdir_ls",
        "pg_execute_server_program",
        "overriding",
    }
)
_PG_DENIED_PREFIXES = ("lo_", "pg_advisory", "pg_try_advisory", "dblink", "pg_ls_")
_PG_DENIED_INFIX = "_to_xml"

_COMMON_DENIED_NAMES = frozenset(
    {"tusk_schema", "tusk_tracking", "tusk_outbox", "tusk_meta", "load_extension"}
)
_SQLITE_DENIED_NAMES = _COMMON_DENIED_NAMES | {
    "fts3_tokenizer",
    "readfile",
    "writefile",
    "edit",
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "sqlite_temp_schema",
    "sqlite_sequence",
}

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")


@dataclass(frozen=True, slots=True)
class Checked:
    """SQL that passed the guard: the text to send and its top-level verb.

    On PostgreSQL the text ends at its last token (no ``;`` or comment after it), so it can be
    wrapped (:func:`bounded_sql`); ``returning`` says whether a write
    returns rows.
    """

    sql: str
    verb: str
    placeholders: int
    returning: bool = False


@dataclass(slots=True)
class _Tok:
    kind: str  # "word", "ident", "string", "param", "punct", "number", "op"
    text: str
    depth: int


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ord(ch) > 127


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) > 127


def _scan(sql: str, dialect: Dialect) -> tuple[list[_Tok], list[int], list[int]]:
    """Tokens (comments dropped), the offsets of the ``?`` placeholders, and where each token ends."""
    pg = dialect == "postgresql"
    toks: list[_Tok] = []
    params: list[int] = []
    ends: list[int] = []
    depth = 0
    i, n = 0, len(sql)
    while i < n:
        if len(ends) < len(toks):  # every branch moves i past what it read
            ends.append(i)
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i, nested=pg)
        elif ch == "'":
            i = _skip_string(sql, i, backslashes=False)
            toks.append(_Tok("string", "", depth))
        elif ch == '"' or (not pg and ch in "`["):
            close = {"[": "]"}.get(ch, ch)
            j = i + 1
            buf = []
            while True:
                k = sql.find(close, j)
                if k < 0:
                    raise refuse("an unterminated quoted identifier")
                buf.append(sql[j:k])
                if close != "]" and sql.startswith(close * 2, k):
                    buf.append(close)
                    j = k + 2
                    continue
                i = k + 1
                break
            toks.append(_Tok("ident", "".join(buf).lower(), depth))
        elif ch == "?":
            if i + 1 < n and sql[i + 1].isdigit():
                raise refuse("a numbered placeholder (?NNN)", "use plain ?")
            params.append(i)
            toks.append(_Tok("param", "?", depth))
            i += 1
        elif pg and ch == "$":
            m = _DOLLAR_TAG.match(sql, i)
            if m is None:
                raise refuse("a $ parameter", "use ? placeholders")
            end = sql.find(m.group(0), m.end())
            if end < 0:
                raise refuse("an unterminated dollar-quoted string")
            i = end + len(m.group(0))
            toks.append(_Tok("string", "", depth))
        elif pg and sql.startswith("::", i):
            toks.append(_Tok("op", "::", depth))
            i += 2
        elif (
            (ch == ":" or (not pg and ch in "$@"))
            and i + 1 < n
            and (_is_ident_start(sql[i + 1]) or (not pg and sql[i + 1].isdigit()))
        ):
            raise refuse(f"a named parameter ({ch}name)", "use ? placeholders")
        elif _is_ident_start(ch):
            j = i + 1
            while j < n and _is_ident_char(sql[j]):
                j += 1
            word = sql[i:j].lower()
            if pg and word == "u" and sql.startswith("&", j):
                raise refuse("a Unicode-escaped name or string (U&)")
            if pg and word == "e" and sql.startswith("'", j):
                i = _skip_string(sql, j, backslashes=True)
                toks.append(_Tok("string", "", depth))
                continue
            toks.append(_Tok("word", word, depth))
            i = j
        elif ch.isdigit() or (ch == "." and i + 1 < n and sql[i + 1].isdigit()):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                if sql[j] in "eE" and j + 1 < n and sql[j + 1] in "+-":
                    j += 1
                j += 1
            toks.append(_Tok("number", sql[i:j], depth))
            i = j
        elif ch == "(":
            toks.append(_Tok("punct", ch, depth))
            depth += 1
            i += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise refuse("an unbalanced ')'")
            toks.append(_Tok("punct", ch, depth))
            i += 1
        elif ch in ";,.":
            toks.append(_Tok("punct", ch, depth))
            i += 1
        else:
            toks.append(_Tok("op", ch, depth))
            i += 1
    if depth:
        raise refuse("an unbalanced '('")
    if len(ends) < len(toks):
        ends.append(n)
    return toks, params, ends


def _skip_block_comment(sql: str, i: int, *, nested: bool) -> int:
    if not nested:
        j = sql.find("*/", i + 2)
        return len(sql) if j < 0 else j + 2  # SQLite: an open comment runs to the end
    level, j = 0, i
    while j < len(sql):
        if sql.startswith("/*", j):
            level += 1
            j += 2
        elif sql.startswith("*/", j):
            level -= 1
            j += 2
            if level == 0:
                return j
        else:
            j += 1
    raise refuse("an unterminated comment")


def _skip_string(sql: str, i: int, *, backslashes: bool) -> int:
    j = i + 1
    n = len(sql)
    while j < n:
        ch = sql[j]
        if backslashes and ch == "\\":
            j += 2
            continue
        if ch == "'":
            if j + 1 < n and sql[j + 1] == "'":
                j += 2
                continue
            return j + 1
        j += 1
    raise refuse("an unterminated string literal")


def _denied_name(name: str, dialect: Dialect) -> bool:
    if dialect == "sqlite":
        return name in _SQLITE_DENIED_NAMES
    return (
        name in _PG_DENIED_NAMES
        or name in _COMMON_DENIED_NAMES
        or name.startswith(_PG_DENIED_PREFIXES)
        or _PG_DENIED_INFIX in name
    )


_STORE_TABLE = "event_store"
_ID_NAMES = frozenset({"id", "rowid", "_rowid_", "oid"})  # SQLite's rowid aliases the id column


def _check_ids(toks: list[_Tok], verb: str, first: str) -> None:
    """Rule 6: the store's ``id`` column is never written by fujsen SQL."""
    names = [t.text if t.kind in ("word", "ident") else None for t in toks]
    top = next((i for i, t in enumerate(toks) if t.kind == "word" and t.text == verb and t.depth == 0), 0)
    end = next((i for i in range(top, len(toks)) if (toks[i].kind == "punct" and toks[i].text == "(")
                or names[i] in ("set", "values", "select", "default")), len(toks))
    if _STORE_TABLE not in names[top:end]:
        return  # the rule protects the event store's ids; other tables are the config's
    if verb == "insert":
        at = next(i for i, t in enumerate(toks) if t.kind == "word" and t.text == "insert" and t.depth == 0)
        j = at + 1  # INSERT [OR ...] INTO name [AS alias] ( columns ) ...
        while j < len(toks) and not (toks[j].kind == "punct" and toks[j].text == "("):
            if toks[j].kind == "word" and toks[j].text in ("values", "select", "default", "with"):
                j = len(toks)
                break
            j += 1
        if j == len(toks):
            raise refuse("INSERT without a column list", "name the columns; the store assigns ids")
        depth = toks[j].depth
        k = j + 1
        while k < len(toks) and not (toks[k].kind == "punct" and toks[k].text == ")" and toks[k].depth == depth):
            if names[k] in _ID_NAMES:
                raise refuse("an explicit id in INSERT", "the store assigns ids")
            k += 1
    # UPDATE ... SET id = ..., and INSERT ... ON CONFLICT DO UPDATE SET id = ...
    in_set = False
    set_depth = 0
    for i, t in enumerate(toks):
        if t.kind == "word" and t.text == "set":
            in_set, set_depth = True, t.depth
            if i + 1 < len(toks) and toks[i + 1].kind == "punct" and toks[i + 1].text == "(":
                k = i + 2  # SET (a, id) = (...)
                while k < len(toks) and toks[k].depth > t.depth:
                    if names[k] in _ID_NAMES:
                        raise refuse("setting id in UPDATE", "the store assigns ids")
                    k += 1
        elif t.kind == "word" and t.depth == set_depth and t.text in ("where", "from", "returning"):
            in_set = False
        elif in_set and t.depth == set_depth and names[i] in _ID_NAMES:
            if i + 1 < len(toks) and toks[i + 1].kind == "op" and toks[i + 1].text == "=":
                raise refuse("setting id in UPDATE", "the store assigns ids")


_TOO_LARGE = "tusk-fujsen-result-bytes:"


def bounded_sql(checked: Checked) -> str:
    """PostgreSQL: ``checked`` wrapped so the *server* refuses a result past the byte cap.

    libpq reads a whole row (without a server-side cursor, a whole result) before the client
    can count one byte of it, so :func:`fetch_capped` alone comes too late for one huge value
    (``SELECT repeat('x', 500000000)``) or a batch of large ones. Wrapped, the server measures
    each row as it will send it (``record_send``: the row in binary, what the client receives)
    and keeps a running total in row order (a window sum; each row is checked alone first, so
    the window never holds a huge one). The first row that takes the total past
    ``FUJSEN_SQL_MAX_BYTES`` raises an error on the server instead of being sent: the client
    reads at most the cap. A read stays a subquery, which a server-side cursor streams; a write
    that returns rows becomes a data-modifying CTE (run once, as written, and rolled back with
    the error); other writes return no rows and go as they are. Every name is schema-qualified
    so nothing on the fujsen role's search_path can stand in for it.
    """
    if checked.verb != "select" and not checked.returning:
        return checked.sql

    def refuse_past(col: str) -> str:
        return (
            f"CASE WHEN {col} OPERATOR(pg_catalog.>) {FUJSEN_SQL_MAX_BYTES} "
            f"THEN CAST(pg_catalog.concat('{_TOO_LARGE}', {col}) AS pg_catalog.int4) IS NULL ELSE true END"
        )

    source = "tusk_q" if checked.verb != "select" else f"(\n{checked.sql}\n) AS tusk_q"
    sized = (
        "SELECT tusk_q AS tusk_row, pg_catalog.octet_length(pg_catalog.record_send(tusk_q)) AS tusk_size "
        f"FROM {source} OFFSET 0"
    )
    body = (
        "SELECT (tusk_r.tusk_row).* FROM (SELECT tusk_s.tusk_row, pg_catalog.sum(tusk_s.tusk_size) "
        f"OVER (ROWS UNBOUNDED PRECEDING) AS tusk_total FROM ({sized}) AS tusk_s "
        f"WHERE {refuse_past('tusk_s.tusk_size')}) AS tusk_r WHERE {refuse_past('tusk_r.tusk_total')}"
    )
    if checked.verb != "select":
        return f"WITH tusk_q AS (\n{checked.sql}\n) {body}"
    return body


def result_too_large(message: str | None) -> StoreError | None:
    """The store's error for the server's refusal raised by :func:`bounded_sql`, else None."""
    if message is None or _TOO_LARGE not in message:
        return None
    return StoreError(
        f"fujsen SQL returned more than {FUJSEN_SQL_MAX_BYTES:,} bytes; select fewer or smaller values"
    )


_local = threading.local()


def call_deadline(deadline: float | None) -> float | None:
    """Set (or clear) the monotonic time by which SQL run for the current fujsen call must end.

    Returns the previous value, for a nested call to restore.
    """
    previous: float | None = getattr(_local, "deadline", None)
    _local.deadline = deadline
    return previous


def bound_results(on: bool) -> bool:
    """Whether SQL run for the current fujsen call (this thread) has its results bounded on the
    server (:func:`bounded_sql`): set for untrusted configs. Returns the previous value."""
    previous: bool = getattr(_local, "bounded", False)
    _local.bounded = on
    return previous


def sql_for(checked: Checked) -> str:
    """The text to send for ``checked`` on PostgreSQL: bounded on the server when this thread's
    call asks for it, else as written (a trusted config's reads skip the wrapper's cost, 1.1-1.6x
    per statement in ``benchmarks/fujsen_sql.py``, and keep the client-side cap of :func:`fetch_capped`)."""
    return bounded_sql(checked) if getattr(_local, "bounded", False) else checked.sql


def statement_timeout() -> float:
    """Seconds the next fujsen statement may run: the store's cap, or less when the call's time is short."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return FUJSEN_SQL_TIMEOUT_S
    return max(0.001, min(FUJSEN_SQL_TIMEOUT_S, deadline - time.monotonic()))


def fetch_capped(cur: Any, *, batched: bool = True) -> list[tuple[Any, ...]]:
    """Rows of ``cur``, fetched in batches, refused once they pass the row *or* byte cap.

    Bytes are counted as rows arrive (text and blobs by length, other values as 8). The first
    batch is one row and later batches are sized from the rows seen so far, so a result of
    uniform rows stops after about one batch. Rows that grow later in a result could still
    fill a batch: for untrusted configs PostgreSQL bounds that on the server
    (:func:`bounded_sql`); SQLite, whose rows cost no round trip, is read one row at a time
    (``batched=False``).
    """
    rows: list[tuple[Any, ...]] = []
    size = 0
    batch = 1
    while True:
        got = cur.fetchmany(batch)
        if not got:
            return rows
        for row in got:
            for v in row:
                size += len(v) if isinstance(v, (str, bytes, bytearray, memoryview)) else 8
        rows += got
        if size > FUJSEN_SQL_MAX_BYTES:
            raise StoreError(
                f"fujsen SQL returned more than {FUJSEN_SQL_MAX_BYTES:,} bytes; select fewer or smaller values"
            )
        if len(rows) > FUJSEN_SQL_MAX_ROWS:
            return rows  # the store's row check names the limit
        if batched:
            per_row = size // len(rows) + 1
            batch = max(1, min(FUJSEN_SQL_FETCH_BATCH, (FUJSEN_SQL_MAX_BYTES - size) // per_row))


def check(sql: str, nparams: int, dialect: Dialect) -> Checked:
    """Check fujsen SQL against the rules above; raise :class:`SqlRefused` with the reason."""
    if not isinstance(sql, str):
        raise SqlRefused(f"statement refused: SQL must be text, not {type(sql).__name__}")
    toks, params, ends = _scan(sql, dialect)
    while toks and toks[-1].kind == "punct" and toks[-1].text == ";":
        toks.pop()
    if not toks:
        raise SqlRefused("statement refused: the SQL text is empty")
    if any(t.kind == "punct" and t.text == ";" for t in toks):
        raise refuse("a second statement", "one statement per call")
    first = toks[0]
    if first.kind != "word" or first.text not in ALLOWED_FIRST:
        shown = first.text.upper() if first.kind == "word" else repr(first.text or first.kind)
        raise refuse(shown, "only SELECT, INSERT, UPDATE, DELETE and WITH")
    verb = first.text
    if verb == "with":
        verb = next(
            (t.text for t in toks[1:] if t.kind == "word" and t.depth == 0 and t.text in _VERBS), ""
        )
        if not verb:
            raise refuse("a WITH statement without SELECT, INSERT, UPDATE or DELETE")
    prev = ""
    for t in toks:
        if t.kind in ("word", "ident"):
            if (
                t.kind == "word"
                and t.depth > 0
                and t.text in _DML
                and not (t.text == "update" and prev in ("for", "key"))
            ):
                raise refuse(f"{t.text.upper()} inside WITH or a subquery", "data-modifying CTE")
            if t.kind == "word" and t.text == "into" and verb != "insert":
                raise refuse("INTO outside INSERT", "SELECT ... INTO creates a table")
            if _denied_name(t.text, dialect):
                raise refuse(f"{t.text}")
            prev = t.text
        else:
            prev = ""
    _check_ids(toks, verb, first.text)
    if len(params) != nparams:
        raise SqlRefused(
            f"statement refused: it has {len(params)} ? placeholder(s) but {nparams} "
            "parameter(s) were given"
        )
    text = sql
    if dialect == "postgresql":
        body = sql[: ends[len(toks) - 1]]  # no trailing ';' or comment: the text can be wrapped
        # psycopg reads %s placeholders and %% everywhere in the text, literals included.
        pieces, last = [], 0
        for pos in params:
            pieces.append(body[last:pos].replace("%", "%%"))
            last = pos + 1
        pieces.append(body[last:].replace("%", "%%"))
        text = "%s".join(pieces)
    returning = any(t.kind == "word" and t.depth == 0 and t.text == "returning" for t in toks)
    return Checked(text, verb, len(params), returning)


__all__ = [
    "ALLOWED_FIRST", "Checked", "Dialect", "SqlRefused", "bound_results", "bounded_sql", "call_deadline", "check",
    "fetch_capped", "refuse", "result_too_large", "sql_for", "statement_timeout",
]
