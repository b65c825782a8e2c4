"""Custom search attributes the workflow upserts and `starter.py runs` filters on (all Keyword)."""

from temporalio.common import SearchAttributeKey

ENVIRONMENT = SearchAttributeKey.for_keyword("MigrationEnvironment")
OPERATION = SearchAttributeKey.for_keyword("MigrationOperation")
STAGE = SearchAttributeKey.for_keyword("MigrationStage")
OUTCOME = SearchAttributeKey.for_keyword("MigrationOutcome")
REQUESTED_BY = SearchAttributeKey.for_keyword("MigrationRequestedBy")

ALL = [ENVIRONMENT, OPERATION, STAGE, OUTCOME, REQUESTED_BY]
