"""Reading a Prisma migrations folder (the migration directory). Implemented by the state-engine work.

Contract (other modules rely on it):

    class LocalMigration(BaseModel): name: str; sql: str; raw: bytes (excluded from dumps);
        checksum: str; down_sql: str | None; verify_sql: str | None
    class MigrationFolderError(ValueError): .code (e.g. "P3015", "P3019", "not_found", "non_utf8"), str(e) one clear line
    def read_migrations_dir(path: str | Path) -> list[LocalMigration]   # in Prisma's order
    def prisma_order_key(name: str)                                     # localeCompare-like sort key
"""
