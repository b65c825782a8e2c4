"""The in-process cache of replayed models stays bounded by what its models hold, not only by
their number: a worker serving long histories must not grow without limit."""

from __future__ import annotations

from activities.replay_cache import ReplayCache
from domain.schema import ObjectKind, ObjectRef, SchemaModel, Table


def model(tables: int) -> SchemaModel:
    return SchemaModel(tables=tuple(Table(ref=ObjectRef.of(ObjectKind.table, "public", f"t{i}"), owner="migrator")
                                    for i in range(tables)))


def test_the_oldest_models_leave_when_the_objects_held_pass_the_bound() -> None:
    cache = ReplayCache(max_entries=10, max_objects=250)
    for link in ("a", "b", "c"):
        cache.put("server", link, model(100))
    assert cache.get("server", "a") is None  # 300 objects > 250: the least recently used left
    assert cache.get("server", "b") is not None and cache.get("server", "c") is not None


def test_a_model_over_the_bound_alone_is_kept_for_the_run_that_needs_it() -> None:
    cache = ReplayCache(max_entries=10, max_objects=50)
    cache.put("server", "small", model(10))
    cache.put("server", "huge", model(100))
    assert len(cache) == 1 and cache.get("server", "huge") is not None


def test_the_count_bound_still_holds_for_small_models() -> None:
    cache = ReplayCache(max_entries=2, max_objects=10_000)
    for link in ("a", "b", "c"):
        cache.put("server", link, model(1))
    assert len(cache) == 2 and cache.get("server", "a") is None
