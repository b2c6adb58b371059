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
_STATE_NAMES = _STATES.replace("'", "")

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
    Migration(
        2,
        "promise owners",
        (
            # The run (message) a promise belongs to, whatever its id: the first that created
            # or waited on it with ``ctx.promise``. Canceling or timing out the owner cancels it.
            'ALTER TABLE promises ADD COLUMN owner text COLLATE "C"',
            "CREATE INDEX promises_owned ON promises (owner) "
            "WHERE state = 'pending' AND owner IS NOT NULL",
            """
            CREATE OR REPLACE FUNCTION promissory_cascade() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE promises SET
                    state = 'rejected_canceled',
                    settled_at = clock_timestamp(),
                    value = jsonb_build_object(
                        'type', 'promissory.errors.PromiseCanceledError',
                        'message', 'canceled with ' || NEW.id,
                        'args', jsonb_build_array('canceled with ' || NEW.id, id))
                WHERE ((id >= NEW.id || '/' AND id < NEW.id || '0') OR owner = NEW.id)
                  AND state = 'pending';
                RETURN NULL;
            END
            $$
            """,
        ),
    ),
    Migration(
        3,
        "suspended waits on all, supervisors known by row, decisions applied once",
        (
            # A message suspended on a gather waits for all it awaits (or a first failure),
            # across a restart too, not only for the first to settle.
            "ALTER TABLE promises ADD COLUMN wait_all boolean NOT NULL DEFAULT false",
            # Whether an actor is a Supervisor, so a child's exit goes to the right place on any
            # node, whether or not it can load the parent's class. Every supervisor incarnation
            # was sent SupervisorStarted, which tells the ones made before this column.
            "ALTER TABLE actors ADD COLUMN supervisor boolean",
            # The last supervisor decision applied to the actor (see DECISION_BITS): a replay
            # that applies a bounce or revive again changes nothing.
            "ALTER TABLE actors ADD COLUMN decision bigint",
            """
            UPDATE actors a SET supervisor = EXISTS (
                SELECT 1 FROM promises p
                WHERE p.recipient = a.id AND p.tags->>'promissory:type' = 'SupervisorStarted')
            """,
        ),
    ),
    Migration(
        4,
        "a fleet of nodes",
        (
            # What each node hosts (actor type names), and when it ended: a node's row stays a
            # while after its lease is gone, so `promissory nodes` shows the recently dead.
            "ALTER TABLE nodes ADD COLUMN kinds text[] NOT NULL DEFAULT '{}'",
            "ALTER TABLE nodes ADD COLUMN ended_at timestamptz",
            # A new message names its recipient's node and type in its NOTIFY: the node that
            # holds the actor takes it; for one no node holds, the node the placement picks
            # among those that host its type. No node reads a row to learn it is not its own.
            """
            CREATE OR REPLACE FUNCTION promissory_notify() RETURNS trigger
            LANGUAGE plpgsql AS $$
            DECLARE
                holder text;
                type_name text;
            BEGIN
                IF TG_OP = 'UPDATE' THEN
                    PERFORM pg_notify(TG_ARGV[0], 's' || NEW.id);
                ELSE
                    IF NEW.recipient IS NOT NULL THEN
                        SELECT node, kind INTO holder, type_name
                        FROM actors WHERE id = NEW.recipient;
                        PERFORM pg_notify(TG_ARGV[0], 'm' || NEW.recipient || chr(9) || NEW.seq
                            || chr(9) || coalesce(holder, '') || chr(9)
                            || coalesce(type_name, ''));
                    END IF;
                    IF NEW.timeout_at IS NOT NULL THEN
                        PERFORM pg_notify(TG_ARGV[0], 't');
                    END IF;
                END IF;
                RETURN NULL;
            END
            $$
            """,
        ),
    ),
    Migration(
        5,
        "forgetting runs",
        (
            # What a run owns, settled or not (``Store.forget`` deletes it with the run), and
            # runs by the time they finished (retention finds the old ones without a scan). A
            # run here is a message addressed to the actor made for it: its id is its
            # recipient's (``rt.start`` makes one such actor per agent run). Not CONCURRENTLY:
            # that waits for every transaction in the database, of any schema, to end.
            "CREATE INDEX promises_owner ON promises (owner) WHERE owner IS NOT NULL",
            "CREATE INDEX promises_runs_settled "
            "ON promises (settled_at, id) WHERE kind = 'message' AND id = recipient",
        ),
    ),
    Migration(
        6,
        "schedules",
        (
            # A schedule is a row: its cron expression, the type of run it starts and the
            # task, and its next firing. A node that fires one claims it first (``claimed_by``,
            # compare-and-set on ``next_at``), starts the run (its id is the schedule's id and
            # the firing time, so a repeat creates nothing), then moves ``next_at`` on.
            """
            CREATE TABLE schedules (
                id          text COLLATE "C" PRIMARY KEY,
                cron        text NOT NULL,
                timezone    text NOT NULL DEFAULT 'UTC',
                kind        text NOT NULL,
                task        jsonb,
                missed      text NOT NULL DEFAULT 'once' CHECK (missed IN ('skip', 'once')),
                grace       double precision NOT NULL DEFAULT 60 CHECK (grace >= 0),
                paused      boolean NOT NULL DEFAULT false,
                next_at     timestamptz NOT NULL,
                claimed_by  text,
                last_at     timestamptz,
                last_run    text COLLATE "C",
                created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """,
            "COMMENT ON TABLE schedules IS 'promissory: one row per schedule: its cron "
            "expression, what each firing runs, and when it fires next'",
            "CREATE INDEX schedules_due ON schedules (next_at) WHERE NOT paused",
        ),
    ),
    Migration(
        7,
        "the durable-promise protocol: tasks, callbacks, listeners, outbox, schedules",
        (
            # A promise someone waits on through the protocol (its own task, a callback, a
            # listener): settling it, however it is settled, runs promissory_rpc_settled.
            "ALTER TABLE promises ADD COLUMN obligations boolean NOT NULL DEFAULT false",
            # The protocol's preload: every promise of a branch, read at each task acquire.
            "CREATE INDEX promises_rpc_branch ON promises ((tags->>'resonate:branch')) "
            "WHERE tags ? 'resonate:branch'",
            """
            CREATE TABLE rpc_tasks (
                id          text COLLATE "C" PRIMARY KEY REFERENCES promises (id)
                            ON DELETE CASCADE,
                state       text NOT NULL CHECK (state IN
                                ('pending', 'acquired', 'suspended', 'halted', 'fulfilled')),
                version     bigint NOT NULL DEFAULT 0,
                route       text,
                pid         text,
                ttl         bigint,
                lease_at    timestamptz,
                retry_at    timestamptz,
                resumes     text[] COLLATE "C" NOT NULL DEFAULT '{}',
                created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                CHECK ((state = 'acquired') = (pid IS NOT NULL AND lease_at IS NOT NULL))
            )
            """,
            "COMMENT ON TABLE rpc_tasks IS 'promissory: the durable-promise protocol''s tasks, "
            "one per targeted promise: state, version (the fencing token), lease'",
            "CREATE INDEX rpc_tasks_lease ON rpc_tasks (lease_at) WHERE state = 'acquired'",
            "CREATE INDEX rpc_tasks_retry ON rpc_tasks (retry_at) WHERE state = 'pending'",
            """
            CREATE TABLE rpc_callbacks (
                awaited     text COLLATE "C" NOT NULL,
                awaiter     text COLLATE "C" NOT NULL,
                PRIMARY KEY (awaited, awaiter)
            )
            """,
            "CREATE INDEX rpc_callbacks_awaiter ON rpc_callbacks (awaiter)",
            """
            CREATE TABLE rpc_listeners (
                awaited     text COLLATE "C" NOT NULL,
                address     text NOT NULL,
                route       text NOT NULL,
                PRIMARY KEY (awaited, address)
            )
            """,
            """
            CREATE TABLE rpc_outbox (
                seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                route       text NOT NULL,
                kind        text NOT NULL CHECK (kind IN ('execute', 'unblock')),
                ref         text COLLATE "C" NOT NULL,
                version     bigint,
                created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """,
            "CREATE INDEX rpc_outbox_route ON rpc_outbox (route, seq)",
            """
            CREATE TABLE rpc_schedules (
                id              text COLLATE "C" PRIMARY KEY,
                cron            text NOT NULL,
                promise_id      text NOT NULL,
                promise_timeout bigint NOT NULL,
                promise_param   jsonb,
                promise_tags    jsonb NOT NULL DEFAULT '{}',
                created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
                next_run_at     timestamptz NOT NULL,
                last_run_at     timestamptz
            )
            """,
            "CREATE INDEX rpc_schedules_due ON rpc_schedules (next_run_at)",
            # A protocol promise settled, by anyone (the protocol, an actor, the timeout sweep,
            # plain SQL): its task is fulfilled, the tasks suspended on it go back to pending
            # with an execute message, the others note the resume, listeners get unblock.
            """
            CREATE FUNCTION promissory_rpc_settled() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE rpc_tasks SET state = 'fulfilled', pid = NULL, ttl = NULL,
                    lease_at = NULL, retry_at = NULL, resumes = '{}'
                WHERE id = NEW.id AND state <> 'fulfilled';
                DELETE FROM rpc_callbacks WHERE awaiter = NEW.id;
                UPDATE rpc_tasks t SET resumes = array_append(t.resumes, NEW.id)
                FROM rpc_callbacks c
                WHERE c.awaited = NEW.id AND t.id = c.awaiter
                  AND t.state IN ('pending', 'acquired', 'halted')
                  AND NOT NEW.id = ANY(t.resumes);
                WITH resumed AS (
                    UPDATE rpc_tasks t SET state = 'pending', version = t.version + 1,
                        resumes = ARRAY[NEW.id]::text[],
                        retry_at = clock_timestamp() + interval '30 seconds'
                    FROM rpc_callbacks c
                    WHERE c.awaited = NEW.id AND t.id = c.awaiter AND t.state = 'suspended'
                    RETURNING t.id, t.version, t.route)
                INSERT INTO rpc_outbox (route, kind, ref, version)
                SELECT route, 'execute', id, version FROM resumed WHERE route IS NOT NULL;
                DELETE FROM rpc_callbacks WHERE awaited = NEW.id;
                WITH gone AS (DELETE FROM rpc_listeners WHERE awaited = NEW.id RETURNING route)
                INSERT INTO rpc_outbox (route, kind, ref) SELECT route, 'unblock', NEW.id FROM gone;
                RETURN NULL;
            END
            $$
            """,
            # Every message put in the outbox is announced, once per statement, to the nodes
            # serving poll streams.
            """
            CREATE FUNCTION promissory_rpc_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify({rpc_channel}, '');
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER rpc_outbox_notify AFTER INSERT ON rpc_outbox "
            "FOR EACH STATEMENT EXECUTE FUNCTION promissory_rpc_notify()",
            "CREATE TRIGGER promises_rpc_settled AFTER UPDATE OF state ON promises "
            "FOR EACH ROW WHEN (OLD.state = 'pending' AND NEW.state <> 'pending' "
            "AND NEW.obligations) EXECUTE FUNCTION promissory_rpc_settled()",
        ),
    ),
    Migration(
        8,
        "push messages to HTTP addresses are tried again: attempts and when next",
        (
            "ALTER TABLE rpc_outbox ADD COLUMN attempts integer NOT NULL DEFAULT 0, "
            "ADD COLUMN due_at timestamptz NOT NULL DEFAULT clock_timestamp()",
            "COMMENT ON COLUMN rpc_outbox.due_at IS 'promissory: not taken before this (a post "
            "to an HTTP address that failed waits out its backoff)'",
        ),
    ),
    Migration(
        9,
        "a message its sending node hands to its own actor is not announced",
        (
            # A node that sends a message to an actor it holds hands the message to the
            # actor's activation itself; its send sets ``promissory.handed`` (for the rest of
            # the transaction) to the message's id and that node's. Then no node needs the
            # NOTIFY: every listening node would wake for nothing (the sender's own listener
            # too, competing with the activation it just handed the message to), and the
            # commit would take the notification queue's lock. Any other message (from another
            # process, to an actor another node holds or no node holds, or written by plain
            # SQL) is announced as before.
            """
            CREATE OR REPLACE FUNCTION promissory_notify() RETURNS trigger
            LANGUAGE plpgsql AS $$
            DECLARE
                holder text;
                type_name text;
            BEGIN
                IF TG_OP = 'UPDATE' THEN
                    PERFORM pg_notify(TG_ARGV[0], 's' || NEW.id);
                ELSE
                    IF NEW.recipient IS NOT NULL THEN
                        SELECT node, kind INTO holder, type_name
                        FROM actors WHERE id = NEW.recipient;
                        IF holder IS NULL OR current_setting('promissory.handed', true)
                                IS DISTINCT FROM NEW.id || chr(9) || holder THEN
                            PERFORM pg_notify(TG_ARGV[0], 'm' || NEW.recipient || chr(9)
                                || NEW.seq || chr(9) || coalesce(holder, '') || chr(9)
                                || coalesce(type_name, ''));
                        END IF;
                    END IF;
                    IF NEW.timeout_at IS NOT NULL THEN
                        PERFORM pg_notify(TG_ARGV[0], 't');
                    END IF;
                END IF;
                RETURN NULL;
            END
            $$
            """,
        ),
    ),
    Migration(
        10,
        "a message its sending node hands to its own actor fires no trigger",
        (
            # The send itself now checks that the sending node holds the recipient (it reads
            # the recipient's row anyway, under a share lock) and sets ``promissory.handed``
            # to the message's id only then; the trigger's condition skips such a message, so
            # its function is not even called (a fifth of a send's time on the server went
            # to it: the call, a read of the recipient's row, the setting compared). A
            # handed message with a timeout still fires it, for the timer's NOTIFY alone.
            # A value in the earlier form (id, tab, node: a node not upgraded yet) matches
            # no message: such a message is announced, as any other.
            """
            CREATE OR REPLACE FUNCTION promissory_notify() RETURNS trigger
            LANGUAGE plpgsql AS $$
            DECLARE
                holder text;
                type_name text;
            BEGIN
                IF TG_OP = 'UPDATE' THEN
                    PERFORM pg_notify(TG_ARGV[0], 's' || NEW.id);
                ELSE
                    IF NEW.recipient IS NOT NULL AND current_setting('promissory.handed', true)
                            IS DISTINCT FROM NEW.id THEN
                        SELECT node, kind INTO holder, type_name
                        FROM actors WHERE id = NEW.recipient;
                        PERFORM pg_notify(TG_ARGV[0], 'm' || NEW.recipient || chr(9)
                            || NEW.seq || chr(9) || coalesce(holder, '') || chr(9)
                            || coalesce(type_name, ''));
                    END IF;
                    IF NEW.timeout_at IS NOT NULL THEN
                        PERFORM pg_notify(TG_ARGV[0], 't');
                    END IF;
                END IF;
                RETURN NULL;
            END
            $$
            """,
            "DROP TRIGGER promises_created ON promises",
            "CREATE TRIGGER promises_created AFTER INSERT ON promises FOR EACH ROW "
            "WHEN (NEW.state = 'pending' AND (NEW.timeout_at IS NOT NULL "
            "OR (NEW.recipient IS NOT NULL "
            "AND current_setting('promissory.handed', true) IS DISTINCT FROM NEW.id))) "
            "EXECUTE FUNCTION promissory_notify({channel})",
        ),
    ),
    Migration(
        11,
        "one trigger for a settle, one check for a row",
        (
            # A table's CHECK constraints and its triggers' WHEN conditions are stored as
            # expression trees in text, which the server reads back and prepares once per
            # statement that writes a row, every time (a constant is one token per byte): for
            # a message's send and settle that was a third of their time on the server.
            # The four checks become one call of a function (its expressions are prepared
            # once per session), which also says which rule a row broke; the three triggers a
            # settle fired (the cascade of a cancel, the protocol's settle, the NOTIFY), two of
            # them only to find their condition false, become one, in their order.
            f"""
            CREATE FUNCTION promissory_promise_ok(
                state text, kind text, settled_at timestamptz, tags jsonb
            ) RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
            BEGIN
                IF state NOT IN ({_STATES}) THEN
                    RAISE EXCEPTION 'a promise''s state is one of {_STATE_NAMES}, not %',
                        quote_literal(state)
                        USING ERRCODE = 'check_violation', CONSTRAINT = 'promises_ok',
                        COLUMN = 'state';
                END IF;
                IF (state = 'pending') <> (settled_at IS NULL) THEN
                    RAISE EXCEPTION 'a promise has a settled_at exactly when it is settled '
                        '(state %, settled_at %)', state, quote_nullable(settled_at)
                        USING ERRCODE = 'check_violation', CONSTRAINT = 'promises_ok',
                        COLUMN = 'settled_at';
                END IF;
                IF kind NOT IN ('promise', 'timer', 'message', 'step') THEN
                    RAISE EXCEPTION 'a promise''s kind is promise, timer, message or step, '
                        'not %', quote_literal(kind)
                        USING ERRCODE = 'check_violation', CONSTRAINT = 'promises_ok',
                        COLUMN = 'kind';
                END IF;
                IF jsonb_typeof(tags) <> 'object'
                        OR jsonb_path_exists(tags, '$.* ? (@.type() != "string")') THEN
                    RAISE EXCEPTION 'a promise''s tags are a JSON object of strings, not %',
                        tags
                        USING ERRCODE = 'check_violation', CONSTRAINT = 'promises_ok',
                        COLUMN = 'tags';
                END IF;
                RETURN true;
            END
            $$
            """,
            "ALTER TABLE promises DROP CONSTRAINT promises_state_check, "
            "DROP CONSTRAINT promises_tags_check, DROP CONSTRAINT promises_kind_check, "
            "DROP CONSTRAINT promises_check, ADD CONSTRAINT promises_ok "
            "CHECK (promissory_promise_ok(state, kind, settled_at, tags))",
            """
            CREATE FUNCTION promissory_settled() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                -- Canceling or timing out a promise cancels every pending promise under it
                -- and every one it owns (migrations 1 and 2).
                IF NEW.state IN ('rejected_canceled', 'rejected_timedout') THEN
                    UPDATE promises SET
                        state = 'rejected_canceled',
                        settled_at = clock_timestamp(),
                        value = jsonb_build_object(
                            'type', 'promissory.errors.PromiseCanceledError',
                            'message', 'canceled with ' || NEW.id,
                            'args', jsonb_build_array('canceled with ' || NEW.id, id))
                    WHERE ((id >= NEW.id || '/' AND id < NEW.id || '0') OR owner = NEW.id)
                      AND state = 'pending';
                END IF;
                -- A protocol promise: its task fulfilled, its awaiters resumed, its
                -- listeners told (migration 7).
                IF NEW.obligations THEN
                    UPDATE rpc_tasks SET state = 'fulfilled', pid = NULL, ttl = NULL,
                        lease_at = NULL, retry_at = NULL, resumes = '{}'
                    WHERE id = NEW.id AND state <> 'fulfilled';
                    DELETE FROM rpc_callbacks WHERE awaiter = NEW.id;
                    UPDATE rpc_tasks t SET resumes = array_append(t.resumes, NEW.id)
                    FROM rpc_callbacks c
                    WHERE c.awaited = NEW.id AND t.id = c.awaiter
                      AND t.state IN ('pending', 'acquired', 'halted')
                      AND NOT NEW.id = ANY(t.resumes);
                    WITH resumed AS (
                        UPDATE rpc_tasks t SET state = 'pending', version = t.version + 1,
                            resumes = ARRAY[NEW.id]::text[],
                            retry_at = clock_timestamp() + interval '30 seconds'
                        FROM rpc_callbacks c
                        WHERE c.awaited = NEW.id AND t.id = c.awaiter AND t.state = 'suspended'
                        RETURNING t.id, t.version, t.route)
                    INSERT INTO rpc_outbox (route, kind, ref, version)
                    SELECT route, 'execute', id, version FROM resumed WHERE route IS NOT NULL;
                    DELETE FROM rpc_callbacks WHERE awaited = NEW.id;
                    WITH gone AS (
                        DELETE FROM rpc_listeners WHERE awaited = NEW.id RETURNING route)
                    INSERT INTO rpc_outbox (route, kind, ref)
                    SELECT route, 'unblock', NEW.id FROM gone;
                END IF;
                PERFORM pg_notify(TG_ARGV[0], 's' || NEW.id);
                RETURN NULL;
            END
            $$
            """,
            "DROP TRIGGER promises_cascade ON promises",
            "DROP TRIGGER promises_rpc_settled ON promises",
            "DROP TRIGGER promises_settled ON promises",
            "CREATE TRIGGER promises_settled AFTER UPDATE OF state ON promises FOR EACH ROW "
            "WHEN (OLD.state = 'pending' AND NEW.state <> 'pending') "
            "EXECUTE FUNCTION promissory_settled({channel})",
            "DROP FUNCTION promissory_cascade()",
            "DROP FUNCTION promissory_rpc_settled()",
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


def rpc_channel_for(schema: str) -> str:
    """The NOTIFY channel on which the durable-promise protocol's outbox is announced."""
    return "promissory_rpc_" + hashlib.sha1(schema.encode()).hexdigest()[:32]


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
        rpc_channel = "'" + rpc_channel_for(schema) + "'"
        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            statements = [
                s.replace("{channel}", channel).replace("{rpc_channel}", rpc_channel)
                for s in migration.statements
            ]
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
