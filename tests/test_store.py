"""The store on a real SQLite file and the real PostgreSQL: schema, migrations, ordering."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from banfeed.errors import SchemaError, StoreError
from banfeed.models import Offender
from banfeed.store import Store, open_store
from banfeed.store.schema import metadata


def test_migrations_build_exactly_the_declared_schema(store_url: str) -> None:
    store = open_store(store_url, create=True)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        assert store.current_revision() == store.head_revision()
        before, after = store.upgrade()  # idempotent
        assert before == after == store.head_revision()
    finally:
        store.close()


def test_a_store_without_schema_is_refused(store_url: str) -> None:
    with pytest.raises(SchemaError, match="banfeed db upgrade"):
        open_store(store_url)


def test_offenders_come_back_in_numeric_order(store_url: str) -> None:
    rng = random.Random(3)
    addresses: list[IPv4Address | IPv6Address] = [
        IPv4Address(rng.getrandbits(32)) for _ in range(300)
    ] + [IPv6Address(rng.getrandbits(128)) for _ in range(300)]
    addresses += [IPv4Address("9.0.0.1"), IPv4Address("10.0.0.1"), IPv4Address("100.0.0.1")]
    addresses = list(dict.fromkeys(addresses))
    rng.shuffle(addresses)
    store = open_store(store_url, create=True)
    try:
        with store.write() as tx:
            tx.insert_offenders(
                [
                    Offender(a, 1, 1, 1, ("IPS",), ("fw",), ("fw/root",), None, "listed")
                    for a in addresses
                ],
                1,
            )
        with store.read() as tx:
            got = [o.ip for o in tx.iter_offenders()]
            v6 = [o.ip for o in tx.iter_offenders(active_at=5, family=6)]
        assert got == sorted(addresses, key=lambda a: (a.version, int(a)))  # never lexical
        assert v6 == [a for a in got if a.version == 6]
    finally:
        store.close()


def test_bad_url_and_missing_folder_are_store_errors(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store("sqlite:////nonexistent-folder-xyz/banfeed.db")
    with pytest.raises(StoreError):
        Store("mysql://x@127.0.0.1/db")


def test_the_schema_head_named_in_code_is_the_newest_migration(store_url: str) -> None:
    from banfeed.store.engine import SCHEMA_HEAD

    store = open_store(store_url, create=True)
    try:
        assert store.head_revision() == SCHEMA_HEAD
        assert store.schema_revision() == store.current_revision() == SCHEMA_HEAD
    finally:
        store.close()
