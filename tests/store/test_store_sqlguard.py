"""The statement guard: what it lets through, what it refuses, and the text it hands psycopg."""

from __future__ import annotations

import pytest

from tusk_events.store.sqlguard import SqlRefused, check

BOTH = ["sqlite", "postgresql"]

DOCS_INSERT = """
        INSERT INTO event_store (event_type, payload, timestamp)
        VALUES (?, ?, datetime('now'))
    """


@pytest.mark.parametrize("dialect", BOTH)
@pytest.mark.parametrize(
    ("sql", "n", "verb"),
    [
        (DOCS_INSERT, 2, "insert"),
        ("SELECT event_type, payload, timestamp FROM event_store", 0, "select"),
        ("SELECT event_type FROM event_store WHERE event_type = ? AND timestamp > ?", 2, "select"),
        ("select 1;", 0, "select"),
        ("SELECT 1 ;  -- trailing comment\n", 0, "select"),
        ("UPDATE event_store SET payload = ? WHERE id = ?", 2, "update"),
        ("DELETE FROM event_store WHERE id IN (SELECT id FROM event_store LIMIT ?)", 1, "delete"),
        (
            (
                "WITH x AS (SELECT id FROM event_store) "
                "DELETE FROM event_store WHERE id IN (SELECT id FROM x)"
            ),
            0,
            "delete",
        ),
        (
            (
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < ?) "
                "SELECT * FROM r"
            ),
            1,
            "select",
        ),
        (
            (
                "INSERT INTO event_store (event_type, payload) "
                "SELECT event_type, payload FROM event_store"
            ),
            0,
            "insert",
        ),
        (
            (
                "INSERT INTO event_store (event_id, event_type, payload) VALUES (?, ?, ?) "
                "ON CONFLICT (event_id) DO UPDATE SET payload = excluded.payload"
            ),
            3,
            "insert",
        ),
        ("SELECT * FROM event_store WHERE id = ? FOR UPDATE", 1, "select"),
        ("SELECT 'it''s ; DROP TABLE x', \"odd;name\" FROM event_store", 0, "select"),
        ("SELECT '?', ? /* ? ; */ -- ?;\n", 1, "select"),
        ("SELECT 'delete from x', 'insert into y' FROM event_store", 0, "select"),
    ],
)
def test_allowed(dialect: str, sql: str, n: int, verb: str) -> None:
    checked = check(sql, n, dialect)  # type: ignore[arg-type]
    assert checked.verb == verb and checked.placeholders == n


@pytest.mark.parametrize("dialect", BOTH)
@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("ATTACH DATABASE 'x' AS y", "ATTACH is not allowed"),
        ("DETACH y", "DETACH is not allowed"),
        ("PRAGMA user_version", "PRAGMA is not allowed"),
        ("VACUUM", "VACUUM is not allowed"),
        ("VACUUM INTO '/tmp/x'", "VACUUM is not allowed"),
        ("CREATE TABLE x (a)", "CREATE is not allowed"),
        ("DROP TABLE event_store", "DROP is not allowed"),
        ("ALTER TABLE event_store RENAME TO x", "ALTER is not allowed"),
        ("REPLACE INTO event_store VALUES (1)", "REPLACE is not allowed"),
        ("EXPLAIN SELECT 1", "EXPLAIN is not allowed"),
        ("COPY event_store TO '/tmp/x'", "COPY is not allowed"),
        ("SET search_path = public", "SET is not allowed"),
        ("(SELECT 1)", "'\\(' is not allowed"),
        ("SELECT 1; SELECT 2", "a second statement"),
        ("SELECT 1;;SELECT 2", "a second statement"),
        ("SELECT 1; -- c\n SELECT 2", "a second statement"),
        ("WITH d AS (DELETE FROM event_store RETURNING *) SELECT * FROM d", "DELETE inside WITH"),
        (
            "WITH d AS (UPDATE event_store SET payload = '1' RETURNING *) SELECT 1",
            "UPDATE inside WITH",
        ),
        (
            "WITH d AS (INSERT INTO event_store (event_type) VALUES ('x') RETURNING *) SELECT 1",
            "INSERT inside WITH",
        ),
        ("SELECT * FROM (DELETE FROM x RETURNING *) s", "DELETE inside WITH"),
        ("WITH x AS (SELECT 1) VALUES (1)", "WITH statement without"),
        ("SELECT * INTO backup FROM event_store", "INTO outside INSERT"),
        ("SELECT 1 FROM event_store WHERE id = :id", "named parameter"),
        ("SELECT 1 FROM event_store WHERE id = ?2", "numbered placeholder"),
        ("SELECT 'unterminated", "unterminated string"),
        ('SELECT "unterminated', "unterminated quoted identifier"),
        ("SELECT (1", "unbalanced"),
        ("SELECT 1)", "unbalanced"),
        ("", "empty"),
        ("  ;  ", "empty"),
        ("SELECT load_extension('x')", "load_extension is not allowed"),
        ("SELECT * FROM tusk_schema", "tusk_schema is not allowed"),
        ('SELECT * FROM "TUSK_SCHEMA"', "tusk_schema is not allowed"),
    ],
)
def test_refused(dialect: str, sql: str, reason: str) -> None:
    with pytest.raises(SqlRefused, match=reason) as info:
        check(sql, 0, dialect)  # type: ignore[arg-type]
    assert str(info.value).startswith("statement refused: ")
    assert info.value.refused is True


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT set_config('role', 'postgres', true)", "set_config"),
        ("SELECT pg_catalog . \"set_config\" ('role', 'x', false)", "set_config"),
        ("SELECT /* c */ pg_catalog./* c */set_config('role', 'x', true)", "set_config"),
        ("UPDATE pg_settings SET setting = 'x' WHERE name = 'role'", "pg_settings"),
        ("SELECT query_to_xml('select 1', true, false, '')", "query_to_xml"),
        ("SELECT table_to_xmlschema('event_store', true, false, '')", "table_to_xmlschema"),
        ("SELECT ts_stat('select 1')", "ts_stat"),
        ("SELECT ts_rewrite('a'::tsquery, 'select 1')", "ts_rewrite"),
        ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
        ("SELECT pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock"),
        ("SELECT lo_import('/etc/passwd')", "lo_import"),
        ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
        ("SELECT pg_notify('c', 'x')", "pg_notify"),
        ("SELECT dblink('host=x', 'select 1')", "dblink"),
        ("SELECT U&\"\\0073et_config\"('role', 'x', true)", "U&"),
        ("SELECT U&'\\0041'", "U&"),
        ("SELECT $1", "\\$ parameter"),
        ("SELECT $$ unterminated", "unterminated dollar-quoted"),
        ("SELECT 1 /* open", "unterminated comment"),
        ("SELECT * FROM x /* /* */ ; DROP TABLE y */; DROP TABLE z", "a second statement"),
        ("INSERT INTO event_store (id) OVERRIDING SYSTEM VALUE VALUES (1)", "overriding"),
    ],
)
def test_refused_on_postgresql(sql: str, reason: str) -> None:
    with pytest.raises(SqlRefused, match=reason):
        check(sql, 0, "postgresql")


@pytest.mark.parametrize(
    ("sql", "n"),
    [
        ("SELECT E'\\';DROP TABLE x;' FROM event_store", 0),  # the ; are inside the E-string
        ("SELECT $$;DROP$$, $tag$ ' ; $$ $tag$ FROM event_store", 0),
        ("SELECT * FROM event_store /* outer /* nested ; */ still comment */", 0),
        ("SELECT payload::json ->> 'a', id::text FROM event_store WHERE id > ?", 1),
        ("SELECT ARRAY[1,2,3][1:2]", 0),
    ],
)
def test_postgresql_quoting(sql: str, n: int) -> None:
    assert check(sql, n, "postgresql").verb == "select"


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM sqlite_master", "sqlite_master"),
        ("SELECT * FROM main.sqlite_schema", "sqlite_schema"),
        ("SELECT * FROM [sqlite_sequence]", "sqlite_sequence"),
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),
        ("SELECT writefile('/tmp/x', 'y')", "writefile"),
        ("SELECT * FROM event_store WHERE id = $id", "named parameter"),
        ("SELECT * FROM event_store WHERE id = @id", "named parameter"),
        ("SELECT `a;b`; SELECT 1", "a second statement"),
        ("SELECT 1 /* open comment ; runs to the end", None),  # SQLite: one statement
        ("SELECT E'\\'; DROP TABLE x; --'", "a second statement"),  # no E-strings in SQLite
        ("SELECT $$; DROP TABLE x; $$", "a second statement"),  # no dollar quotes in SQLite
        ("SELECT * FROM t /* /* */ ; DROP TABLE y */", "a second statement"),  # no nesting
    ],
)
def test_sqlite_quoting(sql: str, reason: str | None) -> None:
    if reason is None:
        assert check(sql, 0, "sqlite").verb == "select"
    else:
        with pytest.raises(SqlRefused, match=reason):
            check(sql, 0, "sqlite")


def test_sqlite_quoted_identifiers_hide_nothing() -> None:
    assert check('SELECT "a;b", `c;d`, [e;f] FROM event_store', 0, "sqlite").verb == "select"


def test_placeholders_are_translated_for_psycopg() -> None:
    checked = check(
        "SELECT '50%', '?', ? FROM event_store WHERE payload LIKE '%x%' AND id > ?", 2, "postgresql"
    )
    assert (
        checked.sql
        == "SELECT '50%%', '?', %s FROM event_store WHERE payload LIKE '%%x%%' AND id > %s"
    )
    assert check(DOCS_INSERT, 2, "sqlite").sql == DOCS_INSERT
    assert "%s, %s, datetime('now')" in check(DOCS_INSERT, 2, "postgresql").sql


@pytest.mark.parametrize("dialect", BOTH)
def test_placeholder_count_must_match(dialect: str) -> None:
    with pytest.raises(SqlRefused, match="2 \\? placeholder\\(s\\) but 1 parameter"):
        check("SELECT ?, ?", 1, dialect)  # type: ignore[arg-type]
    with pytest.raises(SqlRefused, match="must be text"):
        check(b"SELECT 1", 0, dialect)  # type: ignore[arg-type]
