"""Comparing the local history with the ledger. Implemented by the state-engine work.

Contract (other modules rely on it):

    class MigrationState(StrEnum): applied, pending, failed, modified, missing_locally
    class MigrationStatus(BaseModel): name, state, out_of_order: bool, checksum_local, checksum_db,
        attempts: list[LedgerRow]
    class HistoryDiagnosis(BaseModel): migrations: list[MigrationStatus], summary: dict[str, int],
        problems: list[str], needs_baseline: bool (P3005)
    def diagnose(local: list[LocalMigration] | list[BundledMigration], snapshot: LedgerSnapshot) -> HistoryDiagnosis
"""
