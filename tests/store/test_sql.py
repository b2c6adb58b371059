"""Splitting a person's SQL into statements the way psql does (``promissory sql``)."""

from __future__ import annotations

import psycopg
import pytest

from promissory.errors import QueryError
from promissory.store import _sql
from promissory.store._sql import run_sql, split_statements


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        ("select 1; select 2", ["select 1", "select 2"]),
        ("select ';' ; select 2;", ["select ';'", "select 2"]),
        ("select 'a'';b'; select 2", ["select 'a'';b'", "select 2"]),
        ("select E'a\\';b'; select 2", ["select E'a\\';b'", "select 2"]),
        ('select "a;b" from t; select 2', ['select "a;b" from t', "select 2"]),
        ("select $$a;b$$; select $x$ $$ ; $x$", ["select $$a;b$$", "select $x$ $$ ; $x$"]),
        ("select $1; select a$b$c", ["select $1", "select a$b$c"]),
        (
            "-- c;\nselect 1; /* x; /* y; */ z; */ select 2",
            ["-- c;\nselect 1", "/* x; /* y; */ z; */ select 2"],
        ),
        ("  ;; -- only a comment\n /* and this */ ;", []),
    ],
)
def test_statements_are_split_at_semicolons_outside_quotes_and_comments(
    text: str, statements: list[str]
) -> None:
    assert split_statements(text) == statements


@pytest.mark.parametrize("text", ["select 'a", "select $q$a", 'select "a', "select /* a"])
def test_an_unclosed_quote_or_comment_is_a_query_error(text: str) -> None:
    with pytest.raises(QueryError, match="never closed"):
        split_statements(text)


def test_a_statement_the_split_missed_is_refused_by_the_server_not_run(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each statement goes alone through the extended protocol, which runs one statement only:
    # were the split ever to miss a semicolon, the server refuses the pair instead of running it.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE victim (n int)")
    monkeypatch.setattr(_sql, "split_statements", lambda text: [text])

    with pytest.raises(QueryError, match="multiple commands"):
        list(run_sql(dsn, "select 1; drop table victim", write=True))

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone() == (True,)
