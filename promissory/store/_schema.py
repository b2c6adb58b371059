"""The Postgres schema and its migrations.

Migrations are numbered and applied in order, each recorded in ``promissory_migrations``.
They run on the store's own autocommit connection (never inside a caller's transaction) under
an advisory lock, so two processes starting at once apply each migration exactly once. A
database whose recorded version is newer than this code knows is left alone: the store opens
it read-only and says why.

Tables live in the connection's current schema (``public`` by default), so a person reaches
them with the default search_path: ``SELECT * FROM promises WHERE id = 'agent/run/42'``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..errors import SchemaTooNewError, StoreError


@dataclass(frozen=True)
class Migration:
    """One numbered change to the schema.

    ``transactional`` migrations run in one transaction; the others (``CREATE INDEX
    CONCURRENTLY``) run statement by statement in autocommit, after dropping any invalid index
    an interrupted earlier attempt left behind.
    """

    version: int
    name: str
    statements: tuple[str, ...]
    transactional: bool = True


_STATES = "'pending', 'resolved', 'rejected', 'rejected_canceled', 'rejected_timedout'"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "promises, actors and nodes",
        (
            f"""
            CREATE TABLE promises (
                id              text COLLATE "C" PRIMARY KEY,
                state           text NOT NULL DEFAULT 'pending' CHECK (state IN ({_STATES})),
                param           jsonb,
                value           jsonb,
                tags            jsonb NOT NULL DEFAULT '{{}}'
                                CHECK (jsonb_typeof(tags) = 'object' AND NOT
                                       jsonb_path_exists(tags, '$.* ? (@.type() != "string")')),
                timeout_at      timestamptz,
                created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
                settled_at      timestamptz,
                kind            text NOT NULL DEFAULT 'promise'
                                CHECK (kind IN ('promise', 'timer', 'message', 'step')),
                seq             bigint GENERATED ALWAYS AS IDENTITY,
                recipient       text COLLATE "C",
                fingerprint     text,
                attempt         integer NOT NULL DEFAULT 0,
                next_attempt_at timestamptz,
                awaiting        text[] COLLATE "C",
                CHECK ((state = 'pending') = (settled_at IS NULL))
            )
            """,
            "COMMENT ON TABLE promises IS 'promissory: every message, step, timer and external "
            "promise, one row each; settled rows never change'",
            "CREATE INDEX promises_pending_timeout ON promises (timeout_at) "
            "WHERE state = 'pending' AND timeout_at IS NOT NULL",
            "CREATE INDEX promises_pending_recipient ON promises (recipient, seq) "
            "WHERE state = 'pending' AND recipient IS NOT NULL",
            "CREATE INDEX promises_suspended ON promises (recipient) "
            "WHERE state = 'pending' AND awaiting IS NOT NULL",
            "CREATE INDEX promises_cleanup ON promises (recipient) "
            "WHERE state <> 'pending' AND awaiting IS NOT NULL",
            """
            CREATE TABLE actors (
                id          text COLLATE "C" PRIMARY KEY,
                parent      text COLLATE "C" REFERENCES actors (id) ON DELETE CASCADE,
                kind        text NOT NULL,
                spec        jsonb NOT NULL DEFAULT '{}',
                state       jsonb,
                status      text NOT NULL DEFAULT 'running',
                epoch       bigint NOT NULL DEFAULT 0,
                node        text,
                restarts    integer NOT NULL DEFAULT 0,
                history     jsonb NOT NULL DEFAULT '[]',
                reason      jsonb,
                restart_at  timestamptz,
                retry_step  text COLLATE "C",
                watchers    text[] COLLATE "C" NOT NULL DEFAULT '{}',
                seq         bigint GENERATED ALWAYS AS IDENTITY,
                created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """,
            "COMMENT ON TABLE actors IS 'promissory: one row per actor: its parent, kind, "
            "child spec, state snapshot, status and activation epoch'",
            "CREATE INDEX actors_parent ON actors (parent, seq)",
            "CREATE INDEX actors_node ON actors (node) WHERE node IS NOT NULL",
            "CREATE INDEX actors_restarting ON actors (restart_at) WHERE status = 'restarting'",
            """
            CREATE TABLE nodes (
                id          text PRIMARY KEY,
                lock_key    bigint NOT NULL,
                pid         integer,
                host        text,
                started_at  timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """,
            """
            CREATE FUNCTION promissory_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' THEN
                    PERFORM pg_notify(TG_ARGV[0], 's' || NEW.id);
                ELSE
                    IF NEW.recipient IS NOT NULL THEN
                        PERFORM pg_notify(TG_ARGV[0], 'm' || NEW.recipient || chr(9) || NEW.seq);
                    END IF;
                    IF NEW.timeout_at IS NOT NULL THEN
                        PERFORM pg_notify(TG_ARGV[0], 't');
                    END IF;
                END IF;
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER promises_settled AFTER UPDATE OF state ON promises FOR EACH ROW "
            "WHEN (OLD.state = 'pending' AND NEW.state <> 'pending') "
            "EXECUTE FUNCTION promissory_notify({channel})",
            # Canceling or timing out a promise cancels every pending promise under it (its
            # steps, timers, the messages it sent), in the same transaction, however it was
            # settled: by the runtime, the CLI, or plain SQL.
            """
            CREATE FUNCTION promissory_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE promises SET
                    state = 'rejected_canceled',
                    settled_at = clock_timestamp(),
                    value = jsonb_build_object(
                        'type', 'promissory.errors.PromiseCanceledError',
                        'message', 'canceled with ' || NEW.id,
                        'args', jsonb_build_array('canceled with ' || NEW.id, id))
                WHERE id >= NEW.id || '/' AND id < NEW.id || '0' AND state = 'pending';
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER promises_cascade AFTER UPDATE OF state ON promises FOR EACH ROW "
            "WHEN (OLD.state = 'pending' "
            "AND NEW.state IN ('rejected_canceled', 'rejected_timedout')) "
            "EXECUTE FUNCTION promissory_cascade()",
            # A message canceled or timed out keeps a mark (``awaiting`` not null) until its
            # actor has replayed it in cancel mode, so handlers get to clean up, even when the
            # cancel came while no process ran.
            """
            CREATE FUNCTION promissory_mark_canceled() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.awaiting := coalesce(OLD.awaiting, '{}');
                RETURN NEW;
            END
            $$
            """,
            "CREATE TRIGGER promises_mark_canceled BEFORE UPDATE OF state ON promises FOR EACH ROW "
            "WHEN (OLD.state = 'pending' AND OLD.kind = 'message' "
            "AND NEW.state IN ('rejected_canceled', 'rejected_timedout')) "
            "EXECUTE FUNCTION promissory_mark_canceled()",
            "CREATE TRIGGER promises_created AFTER INSERT ON promises FOR EACH ROW "
            "WHEN (NEW.state = 'pending' "
            "AND (NEW.recipient IS NOT NULL OR NEW.timeout_at IS NOT NULL)) "
            "EXECUTE FUNCTION promissory_notify({channel})",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the store in ``schema`` (at most 63 bytes)."""
    name = f"promissory_{schema}"
    if len(name.encode()) <= 63 and name.isidentifier():
        return name
    return "promissory_" + hashlib.sha1(schema.encode()).hexdigest()[:32]


def lock_key(schema: str) -> int:
    """The advisory-lock key that serialises migrations of ``schema``."""
    digest = hashlib.sha1(f"promissory:migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def current_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema new tables go to on this connection."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        path = conn.execute("SHOW search_path").fetchone()
        raise StoreError(
            f"no schema to create promissory's tables in: search_path is {path[0] if path else '?'}"
            " and none of its schemas exists"
        )
    return str(row[0])


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema of ``conn``'s database up to date; return the version now in place.

    ``conn`` must be in autocommit mode. Safe to call from several processes at once.

    Raises:
        SchemaTooNewError: the database records a version newer than this code knows.
        StoreError: a ``promises`` table exists that promissory did not create.

    """
    if not conn.autocommit:
        raise StoreError("migrations run on an autocommit connection of their own")
    # Up to date (every start but the first): one query, no lock.
    try:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM promissory_migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        row = None
    if row is not None and int(row[0]) == LATEST:
        return LATEST
    schema = current_schema(conn)
    key = lock_key(schema)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        version = installed_version(conn)
        if version == 0 and _table_exists(conn, "promises"):
            raise StoreError(
                f"a table named promises already exists in schema {schema!r} and promissory did "
                "not create it; point promissory at another database or schema "
                "(for example ?options=-csearch_path%3Dpromissory in the DSN)"
            )
        if version > LATEST:
            raise SchemaTooNewError(
                f"the database schema is at version {version}, newer than this promissory knows "
                f"({LATEST}); upgrade promissory before writing to this database"
            )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS promissory_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        channel = "'" + channel_for(schema) + "'"
        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            statements = [s.replace("{channel}", channel) for s in migration.statements]
            if migration.transactional:
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement.encode())
                    _record(conn, migration)
            else:
                _drop_invalid_indexes(conn)
                for statement in statements:
                    conn.execute(statement.encode())
                _record(conn, migration)
            version = migration.version
        return version
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def installed_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version recorded in the database, 0 when none is."""
    if not _table_exists(conn, "promissory_migrations"):
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM promissory_migrations").fetchone()
    return int(row[0]) if row else 0


def _record(conn: psycopg.Connection[Any], migration: Migration) -> None:
    conn.execute(
        "INSERT INTO promissory_migrations (version, name) VALUES (%s, %s) "
        "ON CONFLICT (version) DO NOTHING",
        (migration.version, migration.name),
    )


def _table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = %s",
        (name,),
    ).fetchone()
    return row is not None


def _drop_invalid_indexes(conn: psycopg.Connection[Any]) -> None:
    # A CREATE INDEX CONCURRENTLY that was interrupted leaves an invalid index behind, and
    # "IF NOT EXISTS" would then skip building it for real.
    rows = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND NOT i.indisvalid"
    ).fetchall()
    for (name,) in rows:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
