"""Everything that encodes a rule of Prisma Migrate 6 (../shared/tools/prisma-oracle/REPORT.md is
the spec): how a migrations folder is read and ordered, how checksums are computed and compared,
the `_prisma_migrations` ledger's rows, and how the folder and the ledger are diagnosed together
(pending, failed / P3009, phantoms, P3005). Pure: no I/O beyond reading the folder."""
