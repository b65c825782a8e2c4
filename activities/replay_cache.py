"""The in-process cache of replayed schema models (activities/shadow.py): one per worker process,
so every run it executes asks the shadow only for what no earlier run replayed.

Keyed by (server identity, checksum chain of migrations 1..k): the chain names the exact SQL of
every migration up to k, in order; the identity (host, port, role, Prisma schema, server version,
template) the place it was replayed. It also remembers, per server, the role the shadow sessions
run as (the owner of what a replay creates), so a run served from the cache knows it too.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from domain.prisma.checksum import sha256_hex
from domain.schema import SchemaModel


class MigrationScript(Protocol):
    """A local migration (domain.folder.LocalMigration, domain.models.BundledMigration...)."""

    name: str
    sql: str


class ReplayCache:
    """In-process LRU of replayed models, keyed by (server identity, checksum chain of 1..k).

    The chain (ReplayCache.chain) makes a key name the exact SQL of every migration up to k, in
    order; the server identity (host, port, role, Prisma schema, server version, template) makes it
    name the place it was replayed. One worker process serves every run it executes from it."""

    def __init__(self, max_entries: int = 32, max_objects: int = 500_000) -> None:
        # Both bounds: many small histories, or a few long ones (a 10,000-migration history's model
        # holds ~85 MB in ~10^5 objects: the count of objects is what the memory follows).
        self.max_entries = max_entries
        self.max_objects = max_objects
        self._items: OrderedDict[tuple[str, str], SchemaModel] = OrderedDict()
        self._weights: dict[tuple[str, str], int] = {}
        self._roles: dict[str, str] = {}  # server -> the role its shadow sessions run as

    @staticmethod
    def chain(migrations: Sequence[MigrationScript]) -> list[str]:
        """chain[k] identifies migrations 1..k: sha256 over the previous link and the k-th
        migration's checksum (of the SQL we execute, not of a checksum someone handed us)."""
        links = [hashlib.sha256(b"migrator-shadow-chain").hexdigest()]
        for m in migrations:
            links.append(hashlib.sha256((links[-1] + sha256_hex(m.sql.encode("utf-8"))).encode()).hexdigest())
        return links

    def get(self, server: str, link: str) -> SchemaModel | None:
        model = self._items.get((server, link))
        if model is not None:
            self._items.move_to_end((server, link))
        return model

    def put(self, server: str, link: str, model: SchemaModel) -> None:
        key = (server, link)
        self._items[key] = model
        self._items.move_to_end(key)
        self._weights[key] = sum(len(objects) for objects in model.kinds())
        while len(self._items) > 1 and (len(self._items) > self.max_entries
                                        or sum(self._weights.values()) > self.max_objects):
            oldest, _ = self._items.popitem(last=False)  # the newest always stays: the run needs it
            del self._weights[oldest]

    def role(self, server: str) -> str | None:
        return self._roles.get(server)

    def put_role(self, server: str, role: str) -> None:
        self._roles[server] = role

    def clear(self) -> None:
        self._items.clear()
        self._weights.clear()
        self._roles.clear()

    def __len__(self) -> int:
        return len(self._items)


DEFAULT_CACHE = ReplayCache()
