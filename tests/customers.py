"""A table of customers whose phones a later migration destroys: the data-safety, no-backup and
rollout tests share it (the rows a backup must hold, and must put back)."""

from __future__ import annotations

from tests.helpers import migration

PHONES = ["+1 555 0101", None, "+44 20"]  # customers 1, 2, 3 in order
CUSTOMERS = migration("20250101000000_customers",
                      "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, phone text);\n"
                      "INSERT INTO customers VALUES (1, 'ann', '+1 555 0101'), (2, 'bob', NULL), (3, 'cy', '+44 20');\n")
DROP_PHONE = migration("20250102000000_drop_phone", "ALTER TABLE customers DROP COLUMN phone;\n",
                       down="ALTER TABLE customers ADD COLUMN phone text;\n")
LATER = migration("20250103000000_later", "CREATE TABLE audit (id int);\n", down="DROP TABLE audit;\n",
                  verify="SELECT count(*) = 1 FROM audit;\n")
