"""SQL analysis with PostgreSQL's own parser: `parse` (statements and their lines, parse-tree
helpers), `rules` (the lint rules, risk, idempotency of a migration), `rollback` (rollbacks derived
from provably reversible statements). Imports go one way: parse <- rollback <- rules."""
