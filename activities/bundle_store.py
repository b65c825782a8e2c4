"""A run's whole bundle, for the activities that need its SQL.

The bundle is in the run's own history and nowhere else: inline in the request (the workflow's
start event), or, for a bundle too large for one Temporal payload, in `bundle_part` updates
(domain/bundle.py). Activity inputs carry names and checksums where they can, so history holds
each migration's SQL once. This reads the bundle back through the worker's own Temporal client
(`activity.client()`), so payloads are decoded with the run's data converter, payload codec
(encryption) included, checks every part against the digests the request announced, and keeps
the result for the run's later activities on this worker. Preflight, which receives an inline
bundle in its input, remembers it the same way, so verify does not read it back either. Kept: the
last `keep` runs, up to `max_bytes` of distinct bundles (the runs of one rollout share one copy).

Contract:

    class RunBundles:
        async def whole(self) -> list[BundledMigration]          # the current activity's run, every migration
        async def migrations(self, parts, inline) -> list[...]   # `inline` unless the bundle came in parts
        def remember(self, migrations) -> None                   # the current activity's run's whole bundle

Reading history is I/O and idempotent: a retried activity reads the same events.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError

from domain.bundle import BundleIncomplete, assemble
from domain.models import BundledMigration, BundlePart, BundlePartDigest, DeployRequest
from workflows.messages import BUNDLE_PART_UPDATE

_STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED


class RunBundles:
    """Bundles read back from their runs' histories (or remembered from preflight's input), the
    last `keep` runs' kept in memory, at most `max_bytes` of SQL in all."""

    def __init__(self, keep: int = 64, max_bytes: int = 64 * 2**20) -> None:
        self._keep = keep
        self._max_bytes = max_bytes
        self._runs: OrderedDict[tuple[str, str], str] = OrderedDict()  # run -> digest of its bundle
        self._bundles: dict[str, tuple[list[BundledMigration], int]] = {}  # digest -> (migrations, bytes)

    def remember(self, migrations: Sequence[BundledMigration]) -> None:
        """The current activity's run's whole bundle, as the run's request holds it."""
        info = activity.info()
        self._put((info.workflow_id, info.workflow_run_id), migrations)

    def _put(self, key: tuple[str, str], migrations: Sequence[BundledMigration]) -> None:
        digest, size = _digest(migrations)
        self._bundles.setdefault(digest, (list(migrations), size))
        self._runs[key] = digest
        self._runs.move_to_end(key)
        while len(self._runs) > 1 and (len(self._runs) > self._keep or
                                       sum(size for _, size in self._bundles.values()) > self._max_bytes):
            self._runs.popitem(last=False)
            held = set(self._runs.values())
            self._bundles = {d: b for d, b in self._bundles.items() if d in held}

    async def migrations(self, parts: list[BundlePartDigest], inline: list[BundledMigration]) -> list[BundledMigration]:
        """The bundle's migrations with their SQL: `inline` when the bundle came with its request
        (`parts` empty), else read back from the current activity's run."""
        return await self.whole() if parts else inline

    async def whole(self) -> list[BundledMigration]:
        """Every migration of the current activity's run, with its SQL, down.sql and verify.sql."""
        info = activity.info()
        key = (info.workflow_id, info.workflow_run_id)
        if key in self._runs:
            self._runs.move_to_end(key)
            return self._bundles[self._runs[key]][0]
        started = time.perf_counter()
        try:
            found = await self._read(*key)
        except BundleIncomplete as exc:
            raise ApplicationError(f"the run's migrations could not be read back from its history: {exc}",
                                   type="BundleIncomplete", non_retryable=True) from None
        activity.logger.info("bundle read back from history", extra={
            "migrations": len(found), "seconds": round(time.perf_counter() - started, 3)})
        self._put(key, found)
        return found

    @staticmethod
    async def _read(workflow_id: str, run_id: str) -> list[BundledMigration]:
        client = activity.client()
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        request: DeployRequest | None = None
        parts: dict[int, BundlePart] = {}
        async for event in handle.fetch_history_events():
            if event.event_type == _STARTED:
                attrs = event.workflow_execution_started_event_attributes
                (request,) = await client.data_converter.decode(attrs.input.payloads[:1], [DeployRequest])
                if not request.bundle.in_parts:
                    return list(request.bundle.migrations)
            elif event.event_type == _ACCEPTED:
                update = event.workflow_execution_update_accepted_event_attributes.accepted_request
                if update.input.name != BUNDLE_PART_UPDATE:
                    continue
                (part,) = await client.data_converter.decode(update.input.args.payloads, [BundlePart])
                parts.setdefault(part.index, part)
                activity.heartbeat({"stage": "reading the bundle from history", "parts": len(parts)})
                if request is not None and len(parts) == len(request.bundle.parts):
                    break
        if request is None:
            raise BundleIncomplete("the run's request is not in its history")
        return assemble(request.bundle.parts, parts)


def _digest(migrations: Sequence[BundledMigration]) -> tuple[str, int]:
    """(a digest of everything the migrations hold, their size in bytes): equal bundles share one copy."""
    h = hashlib.sha256()
    size = 0
    for m in migrations:
        for text in (m.name, m.checksum, m.sql, m.down_sql or "", m.verify_sql or ""):
            data = text.encode("utf-8")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
            size += len(data)
    return h.hexdigest(), size
