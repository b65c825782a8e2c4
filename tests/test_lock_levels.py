"""domain.lock_levels judged by the real server: each statement runs in a transaction and
`pg_locks` of that backend must show, on every relation we name, exactly the strongest mode we
say; and every existing table it locks must be one we name (except catalog-only ones, listed)."""

from __future__ import annotations

import asyncpg

from domain.lock_levels import (
    CONFLICTS,
    LockMode,
    all_locks,
    blocks_application,
    conflicting_modes,
    script_is_atomic,
    script_locks,
    strongest_locks,
)

SETUP = """
CREATE SCHEMA s;
CREATE TABLE users (id int PRIMARY KEY, email text, n int);
CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric, note text);
CREATE TABLE s.items (id int PRIMARY KEY, order_id int);
CREATE INDEX orders_user_idx ON orders(user_id);
CREATE TABLE p (k int, v text) PARTITION BY LIST (k);
CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1);
CREATE TABLE c2 (k int, v text);
CREATE MATERIALIZED VIEW mv AS SELECT id FROM users;
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER t1 BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION trg();
ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users(id) NOT VALID;
CREATE VIEW v AS SELECT id FROM users;
CREATE POLICY pol ON orders USING (true);
"""

# (statement, tables it also locks that only the catalog shows: the executor finds those with
# pg_blocking_pids at run time)
CASES = [
    ("ALTER TABLE orders ADD COLUMN c int", ()),
    ("ALTER TABLE orders ADD COLUMN c int REFERENCES users(id)", ()),
    ("ALTER TABLE orders ADD CONSTRAINT fk2 FOREIGN KEY (user_id) REFERENCES users(id)", ()),
    ("ALTER TABLE orders ADD CONSTRAINT fk2 FOREIGN KEY (user_id) REFERENCES users(id) NOT VALID", ()),
    ("ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk", ("public.users",)),
    ("ALTER TABLE orders ADD CONSTRAINT ck CHECK (total > 0) NOT VALID", ()),
    ("ALTER TABLE orders ADD CONSTRAINT uq UNIQUE (note)", ()),
    ("ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'x'", ()),
    ("ALTER TABLE orders ALTER COLUMN note SET NOT NULL", ()),
    ("ALTER TABLE orders ALTER COLUMN total TYPE float8", ()),
    ("ALTER TABLE orders DROP COLUMN note", ()),
    ("ALTER TABLE orders DROP CONSTRAINT orders_user_fk", ("public.users",)),
    ("ALTER TABLE orders ALTER COLUMN note SET STATISTICS 100", ()),
    ("ALTER TABLE orders ALTER COLUMN note SET (n_distinct = 5)", ()),
    ("ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL", ()),
    ("ALTER TABLE orders SET (fillfactor = 70)", ()),
    ("ALTER TABLE orders SET (autovacuum_enabled = false)", ()),
    ("ALTER TABLE orders SET (toast.autovacuum_enabled = false)", ()),
    ("ALTER TABLE orders DISABLE TRIGGER t1", ()),
    ("ALTER TABLE orders ENABLE ROW LEVEL SECURITY", ()),
    ("ALTER TABLE orders CLUSTER ON orders_pkey", ()),
    ("ALTER TABLE orders ALTER CONSTRAINT orders_user_fk DEFERRABLE", ()),
    ("ALTER TABLE orders RENAME COLUMN note TO memo", ()),
    ("ALTER TABLE p ATTACH PARTITION c2 FOR VALUES IN (2)", ()),
    ("ALTER TABLE p DETACH PARTITION p1", ()),
    ("ALTER TABLE s.items ADD COLUMN x int", ()),
    ("CREATE INDEX ON orders(total)", ()),
    ("CREATE UNIQUE INDEX ON users(email)", ()),
    ("CREATE TABLE t3 (id int, uid int REFERENCES users(id), oid int, FOREIGN KEY (oid) REFERENCES orders(id))", ()),
    ("CREATE TABLE p2 PARTITION OF p FOR VALUES IN (3)", ()),
    ("CREATE TABLE ch () INHERITS (c2)", ()),
    ("DROP INDEX orders_user_idx", ()),
    ("DROP TRIGGER t1 ON orders", ()),
    ("DROP POLICY pol ON orders", ()),
    ("TRUNCATE orders, users CASCADE", ()),
    ("CREATE TRIGGER t2 AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION trg()", ()),
    ("CREATE POLICY pol2 ON users USING (true)", ()),
    ("CREATE STATISTICS st ON id, email FROM users", ()),
    ("COMMENT ON COLUMN users.email IS 'x'", ()),
    ("REINDEX TABLE orders", ()),
    ("REINDEX INDEX orders_user_idx", ()),
    ("ALTER INDEX orders_user_idx RENAME TO oui", ()),
    ("COMMENT ON INDEX orders_user_idx IS 'x'", ()),
    ("REFRESH MATERIALIZED VIEW mv", ("public.users",)),
    ("CLUSTER orders USING orders_pkey", ()),
    ("LOCK TABLE users IN SHARE MODE", ()),
    ("INSERT INTO orders (id, user_id) SELECT id, id FROM users", ()),
    ("WITH x AS (SELECT id FROM users) UPDATE orders SET note = 'a' FROM x WHERE x.id = orders.id", ()),
    ("DELETE FROM orders USING users WHERE users.id = orders.user_id", ()),
    ("SELECT * FROM users FOR UPDATE", ()),
    ("CREATE OR REPLACE VIEW v AS SELECT id, email FROM users", ()),
    ("ANALYZE users", ()),
]

_OBSERVED = """
SELECT n.nspname || '.' || c.relname AS rel, c.relkind::text AS kind, l.mode
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND n.nspname IN ('public', 's')
"""
_EXISTING = """SELECT array_agg(n.nspname || '.' || c.relname) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 's')"""


async def _observed(db: asyncpg.Connection, sql: str) -> dict[str, LockMode]:
    """The strongest mode per relation the statement's transaction holds (then rolled back)."""
    tx = db.transaction()
    await tx.start()
    try:
        await db.execute(sql)
        rows = await db.fetch(_OBSERVED)
    finally:
        await tx.rollback()
    out: dict[str, LockMode] = {}
    for r in rows:
        mode = LockMode.from_pg_name(r["mode"])
        out[r["rel"]] = max(out.get(r["rel"], mode), mode)
    return out


async def test_lock_levels_match_pg_locks(db: asyncpg.Connection) -> None:
    await db.execute(SETUP)
    tables = set(await db.fetchval(_EXISTING + " AND c.relkind IN ('r', 'p', 'v', 'm')"))
    table_of_index = dict(await db.fetch(
        "SELECT n.nspname || '.' || c.relname, i.indrelid::regclass::text FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"))
    wrong = []
    for sql, catalog_only in CASES:
        observed = await _observed(db, sql)
        ours: dict[str, LockMode] = {}
        for lock in strongest_locks(all_locks(script_locks(sql))):
            if lock.is_index:
                if lock.table_mode:
                    ours["public." + table_of_index[lock.qualified()]] = lock.table_mode
                if lock.qualified() not in observed:
                    continue  # a dropped index is gone from pg_class by the time we look
            ours[lock.qualified()] = lock.mode
        for rel, mode in ours.items():
            if observed.get(rel) != mode:
                wrong.append(f"{sql}: we say {mode.label} on {rel}, PostgreSQL took {observed.get(rel)}")
        unnamed = {rel for rel in observed if rel in tables and rel not in ours and rel not in catalog_only}
        if unnamed:
            wrong.append(f"{sql}: PostgreSQL also locked {sorted(unnamed)}")
    assert wrong == [], "\n".join(wrong)


def test_conflict_table_is_symmetric_and_matches_the_docs() -> None:
    for a in LockMode:
        for b in LockMode:
            assert a.conflicts_with(b) == b.conflicts_with(a), (a, b)
    assert CONFLICTS[LockMode.ACCESS_SHARE] == {LockMode.ACCESS_EXCLUSIVE}
    assert not LockMode.SHARE.conflicts_with(LockMode.SHARE)
    assert LockMode.SHARE_UPDATE_EXCLUSIVE.conflicts_with(LockMode.SHARE_UPDATE_EXCLUSIVE)
    assert LockMode.ACCESS_EXCLUSIVE.pg_name == "AccessExclusiveLock"
    assert LockMode.from_pg_name("ShareRowExclusiveLock") is LockMode.SHARE_ROW_EXCLUSIVE


def test_application_impact() -> None:
    assert blocks_application([LockMode.ACCESS_EXCLUSIVE]) and blocks_application([LockMode.SHARE])
    assert not blocks_application([LockMode.SHARE_UPDATE_EXCLUSIVE])
    assert conflicting_modes([LockMode.SHARE, LockMode.SHARE_UPDATE_EXCLUSIVE]) >= {
        LockMode.ROW_EXCLUSIVE, LockMode.SHARE_UPDATE_EXCLUSIVE}


def test_lint_sentences() -> None:
    (st,) = script_locks("ALTER TABLE users ADD COLUMN nickname text")
    assert [lock.lint_sentence() for lock in st.locks] == [
        "takes ACCESS EXCLUSIVE on public.users (blocks reads and writes while it waits and runs)"]
    (fk,) = script_locks('ALTER TABLE "s"."items" ADD CONSTRAINT f FOREIGN KEY (order_id) REFERENCES orders(id)')
    assert sorted(lock.lint_sentence() for lock in fk.locks) == [
        "takes SHARE ROW EXCLUSIVE on public.orders (blocks writes while it waits and runs; reads go on)",
        "takes SHARE ROW EXCLUSIVE on s.items (blocks writes while it waits and runs; reads go on)"]
    (idx,) = script_locks("DROP INDEX CONCURRENTLY s.items_idx")
    assert idx.locks[0].lint_sentence() == (
        "takes SHARE UPDATE EXCLUSIVE on index s.items_idx and SHARE UPDATE EXCLUSIVE on its table "
        "(blocks other schema changes and VACUUM, not reads or writes)")


def test_concurrently_family_is_multi_transaction() -> None:
    sql = """CREATE INDEX CONCURRENTLY a ON t (x);
             DROP INDEX CONCURRENTLY b;
             REINDEX INDEX CONCURRENTLY c;
             ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY;
             CREATE INDEX d ON t (x);
             VACUUM t;"""
    flags = [st.multi_transaction for st in script_locks(sql)]
    assert flags == [True, True, True, True, False, False]
    modes = [st.locks[0].mode for st in script_locks(sql)]
    assert modes[:4] == [LockMode.SHARE_UPDATE_EXCLUSIVE] * 4 and modes[4] is LockMode.SHARE


def test_what_the_sql_cannot_show_is_marked_not_guessed() -> None:
    sql = "DO $$ BEGIN PERFORM 1; END $$;\nDROP TABLE a CASCADE;\nCREATE TYPE e AS ENUM ('x');\n"
    do, drop, enum = script_locks(sql)
    assert "DO runs code" in do.unknown and not do.locks
    assert "CASCADE" in drop.unknown and drop.locks[0].mode is LockMode.ACCESS_EXCLUSIVE
    assert enum.unknown == "" and enum.locks == ()
    assert [st.line for st in script_locks(sql)] == [1, 2, 3]


def test_cte_names_are_not_tables() -> None:
    (st,) = script_locks("WITH recent AS (SELECT * FROM orders) INSERT INTO archive SELECT * FROM recent")
    assert {(lock.name, lock.mode) for lock in st.locks} == {
        ("archive", LockMode.ROW_EXCLUSIVE), ("orders", LockMode.ACCESS_SHARE)}


def test_retry_safety_and_own_lock_timeout() -> None:
    assert script_is_atomic(script_locks("ALTER TABLE a ADD COLUMN b int; CREATE INDEX ON a (b);"))
    assert not script_is_atomic(script_locks("BEGIN; ALTER TABLE a ADD COLUMN b int; COMMIT;"))
    assert not script_is_atomic(script_locks("CREATE INDEX CONCURRENTLY i ON a (b);"))
    first, _ = script_locks("SET lock_timeout = '30s'; ALTER TABLE a ADD COLUMN b int;")
    assert first.unknown.startswith("sets lock_timeout itself")
