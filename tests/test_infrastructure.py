"""The real services the suite stands on: PostgreSQL per-test databases and both Temporal servers."""

import asyncpg

from workflows import search_attributes


async def test_each_test_gets_an_empty_database_of_its_own(db: asyncpg.Connection, pg_server) -> None:
    await db.execute("CREATE TABLE mine (id int)")
    other = await pg_server.create_database()
    try:
        conn = await asyncpg.connect(pg_server.url(other))
        try:
            tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        assert tables == 0
    finally:
        await pg_server.drop_database(other)


async def test_dev_server_knows_our_search_attributes(dev_client) -> None:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await dev_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=dev_client.namespace)
    )
    assert {k.name for k in search_attributes.ALL} <= set(resp.custom_attributes)


async def test_time_skipping_server_starts(time_skipping_env) -> None:
    assert time_skipping_env.supports_time_skipping
