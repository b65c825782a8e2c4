"""The catalog queries behind activities.catalog: one per object kind, each over every user schema.

They run with `search_path = pg_catalog`, so that PostgreSQL's renderings (format_type,
pg_get_expr, pg_get_indexdef, regclass::text...) qualify every user object with its schema and the
text is the same whatever the reading session's search_path is.

What is left out, in every query:
- system schemas: pg_catalog, information_schema and every `pg_*` schema (pg_toast, pg_temp_N,
  pg_toast_temp_N; the `pg_` prefix is reserved);
- objects that are members of an extension (pg_depend.deptype = 'e'), and the contents of such
  objects (an extension table's columns, indexes, triggers...);
- Prisma's ledger table `_prisma_migrations`, in any schema, and its contents;
- the worker's bookkeeping schema `_migrator_backup` (backups, undo records: activities/bookkeeping.py);
- objects PostgreSQL creates internally for another one (deptype 'i': a range type's constructor
  functions, an FK's system triggers).
Requires PostgreSQL 13 or later (regcollation).
Arrays come back as text[], never name[]: asyncpg decodes text[] natively, while name[] costs a type
lookup on every new connection (about 15 ms, on each run's first catalog read).
"""

from __future__ import annotations

LEDGER = "_prisma_migrations"
BOOKKEEPING = "_migrator_backup"  # domain.backup_items.BOOKKEEPING_SCHEMA


def _not_member(catalog: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass "
        f"AND e.objid = {oid} AND e.deptype = 'e')"
    )


def _acl(acl: str, kind: str, owner: str | None) -> str:
    """The effective ACL as JSON [[grantee, [privilege, ...]], ...]; a NULL ACL is the kind's default
    (acldefault), so an object nobody granted on shows its owner's implicit privileges. Without an
    owner (column ACLs) a NULL ACL is no privileges."""
    source = f"coalesce({acl}, acldefault('{kind}', {owner}))" if owner else acl  # aclexplode(NULL): no rows
    return f"""(SELECT coalesce(json_agg(json_build_array(g.grantee, g.privileges)), '[]')
       FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
                    array_agg(DISTINCT a.privilege_type
                              || CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) AS privileges
             FROM aclexplode({source}) a GROUP BY a.grantee) g)"""


_USER_NAMESPACE = f"""
    n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> '{BOOKKEEPING}'
    AND {_not_member('pg_namespace', 'n.oid')}"""

# A relation whose contents we list: not an extension member and not the ledger.
_USER_RELATION = f"""
    {_not_member('pg_class', 'c.oid')}
    AND NOT (c.relname = '{LEDGER}' AND c.relkind IN ('r', 'p'))"""

SCHEMAS = f"""
SELECT n.nspname AS name, pg_get_userbyid(n.nspowner) AS owner,
       {_acl('n.nspacl', 'n', 'n.nspowner')} AS grants
FROM pg_namespace n
WHERE {_USER_NAMESPACE}
"""

EXTENSIONS = """
SELECT e.extname AS name, e.extversion AS version, n.nspname AS installed_in
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

# Tables (regular and partitioned), views and materialized views.
RELATIONS = f"""
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
       pg_get_userbyid(c.relowner) AS owner, {_acl('c.relacl', 'r', 'c.relowner')} AS grants,
       c.relpersistence = 'u' AS unlogged, c.relrowsecurity AS rls_enabled,
       c.relforcerowsecurity AS rls_forced, coalesce(c.reloptions, '{{}}') AS options,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       CASE WHEN c.relispartition THEN
         (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid)
         || ' ' || pg_get_expr(c.relpartbound, c.oid) END AS partition_of,
       CASE WHEN NOT c.relispartition THEN
         (SELECT coalesce(array_agg(i.inhparent::regclass::text ORDER BY i.inhseqno), '{{}}')
          FROM pg_inherits i WHERE i.inhrelid = c.oid) ELSE '{{}}' END AS inherits,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS view_definition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND {_USER_NAMESPACE} AND {_USER_RELATION}
"""

COLUMNS = f"""
SELECT n.nspname AS schema, c.relname AS relation, c.relkind::text AS relkind, a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       a.attidentity::text AS identity, a.attgenerated::text AS generated,
       pg_get_expr(d.adbin, d.adrelid) AS expression,
       CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END AS collation,
       {_acl('a.attacl', 'c', None)} AS grants
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND {_USER_NAMESPACE} AND {_USER_RELATION}
"""

# contype 'n' (NOT NULL constraints, PostgreSQL 18+) is the column's nullability, already kept.
CONSTRAINTS = f"""
SELECT n.nspname AS schema, c.relname AS relation, c.relkind::text AS relkind, co.conname AS name,
       co.contype::text AS contype, pg_get_constraintdef(co.oid) AS definition, co.convalidated AS validated
FROM pg_constraint co
JOIN pg_class c ON c.oid = co.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE co.contype <> 'n' AND {_USER_NAMESPACE} AND {_USER_RELATION}
"""

INDEXES = f"""
SELECT n.nspname AS schema, c.relname AS relation, c.relkind::text AS relkind, i.relname AS name,
       pg_get_indexdef(x.indexrelid) AS definition, x.indisunique AS is_unique,
       x.indisprimary AS is_primary, x.indisvalid AS valid
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NAMESPACE} AND {_USER_RELATION}
"""

SEQUENCES = f"""
SELECT n.nspname AS schema, c.relname AS name, pg_get_userbyid(c.relowner) AS owner,
       {_acl('c.relacl', 's', 'c.relowner')} AS grants,
       format_type(s.seqtypid, NULL) AS data_type, s.seqstart AS start, s.seqincrement AS increment,
       s.seqmin AS minimum, s.seqmax AS maximum, s.seqcache AS cache, s.seqcycle AS cycle,
       (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
        FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
          AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        ORDER BY 1 LIMIT 1) AS owned_by
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NAMESPACE} AND {_not_member('pg_class', 'c.oid')}
"""

# Enums, domains, stand-alone composite types and range types (not tables' row types, arrays or
# multiranges, which PostgreSQL derives from another object).
TYPES = f"""
SELECT n.nspname AS schema, t.typname AS name, t.typtype::text AS typtype,
       pg_get_userbyid(t.typowner) AS owner, {_acl('t.typacl', 'T', 't.typowner')} AS grants,
       (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
         AS labels,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
       t.typnotnull AS not_null, pg_get_expr(t.typdefaultbin, 0) AS default_value,
       CASE WHEN t.typtype = 'd' AND t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)
            THEN t.typcollation::regcollation::text END AS collation,
       (SELECT coalesce(array_agg(quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid) ORDER BY k.conname), '{{}}')
        FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c') AS domain_constraints,
       (SELECT coalesce(array_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                 || CASE WHEN a.attcollation <> at.typcollation THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
                 ORDER BY a.attnum), '{{}}')
        FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
        WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) AS fields,
       (SELECT format('subtype = %s, subtype_opclass = %s, collation = %s, canonical = %s, subtype_diff = %s',
                      format_type(r.rngsubtype, NULL), oc.opcname, nullif(r.rngcollation, 0)::regcollation,
                      nullif(r.rngcanonical::oid, 0)::regproc, nullif(r.rngsubdiff::oid, 0)::regproc)
        FROM pg_range r JOIN pg_opclass oc ON oc.oid = r.rngsubopc WHERE r.rngtypid = t.oid) AS range_definition
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE (t.typtype IN ('e', 'd', 'r')
       OR (t.typtype = 'c' AND (SELECT r.relkind FROM pg_class r WHERE r.oid = t.typrelid) = 'c'))
  AND {_USER_NAMESPACE} AND {_not_member('pg_type', 't.oid')}
"""

ROUTINES = f"""
SELECT n.nspname AS schema, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args,
       p.prokind::text AS prokind, pg_get_userbyid(p.proowner) AS owner,
       {_acl('p.proacl', 'f', 'p.proowner')} AS grants,
       CASE WHEN p.prokind = 'a' THEN
         (SELECT format('CREATE AGGREGATE %s(%s) (SFUNC = %s, STYPE = %s%s%s%s%s)',
                        p.oid::regproc, pg_get_function_arguments(p.oid), g.aggtransfn::regproc,
                        format_type(g.aggtranstype, NULL),
                        ', FINALFUNC = ' || nullif(g.aggfinalfn::oid, 0)::regproc,
                        ', COMBINEFUNC = ' || nullif(g.aggcombinefn::oid, 0)::regproc,
                        ', INITCOND = ' || quote_literal(g.agginitval),
                        CASE WHEN g.aggkind <> 'n' THEN ', KIND = ' || g.aggkind::text END)
          FROM pg_aggregate g WHERE g.aggfnoid = p.oid)
       ELSE pg_get_functiondef(p.oid) END AS definition
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_NAMESPACE} AND {_not_member('pg_proc', 'p.oid')}
  AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass
                  AND i.objid = p.oid AND i.deptype = 'i')
"""

TRIGGERS = f"""
SELECT n.nspname AS schema, c.relname AS relation, c.relkind::text AS relkind, t.tgname AS name,
       pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {_USER_NAMESPACE} AND {_USER_RELATION}
"""

POLICIES = f"""
SELECT n.nspname AS schema, c.relname AS relation, c.relkind::text AS relkind, p.polname AS name,
       p.polpermissive AS permissive, p.polcmd::text AS command,
       (SELECT array_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END) FROM unnest(p.polroles) r)
         AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using_expression,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expression
FROM pg_policy p
JOIN pg_class c ON c.oid = p.polrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NAMESPACE} AND {_USER_RELATION}
"""
