"""A run's whole bundle, for the activities that need its SQL, when it came in parts.

A bundle too large for one Temporal payload reaches the workflow as `bundle_part` updates
(domain/bundle.py); their payloads are in the run's own history, and nowhere else. This reads them
back through the worker's own Temporal client (`activity.client()`), so they are decoded with the
run's data converter, payload codec (encryption) included, checks every part against the digests
the request announced, and keeps the result for the run's later activities on this worker (a few
runs at most: one per environment is open at a time).

Reading history is I/O and idempotent: a retried activity reads the same events.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError

from domain.bundle import BundleIncomplete, assemble
from domain.models import BundledMigration, BundlePart, BundlePartDigest
from workflows.messages import BUNDLE_PART_UPDATE

_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED


class RunBundles:
    """Bundles read back from their runs' histories, the last `keep` runs' kept in memory."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._cache: OrderedDict[tuple[str, str], list[BundledMigration]] = OrderedDict()

    async def migrations(self, parts: list[BundlePartDigest], inline: list[BundledMigration]) -> list[BundledMigration]:
        """The bundle's migrations with their SQL: `inline` when the bundle came with its request
        (`parts` empty), else read back from the current activity's run."""
        if not parts:
            return inline
        info = activity.info()
        key = (info.workflow_id, info.workflow_run_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        started = time.perf_counter()
        try:
            found = assemble(parts, await self._read_parts(*key))
        except BundleIncomplete as exc:
            raise ApplicationError(f"the run's migrations could not be read back from its history: {exc}",
                                   type="BundleIncomplete", non_retryable=True) from None
        activity.logger.info("bundle read back from history", extra={
            "parts": len(parts), "migrations": len(found), "seconds": round(time.perf_counter() - started, 3)})
        self._cache[key] = found
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return found

    @staticmethod
    async def _read_parts(workflow_id: str, run_id: str) -> dict[int, BundlePart]:
        client = activity.client()
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        parts: dict[int, BundlePart] = {}
        async for event in handle.fetch_history_events():
            if event.event_type != _ACCEPTED:
                continue
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name != BUNDLE_PART_UPDATE:
                continue
            (part,) = await client.data_converter.decode(request.input.args.payloads, [BundlePart])
            parts.setdefault(part.index, part)
            activity.heartbeat({"stage": "reading the bundle from history", "parts": len(parts)})
        return parts
