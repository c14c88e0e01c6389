"""Databases for the coordinator registry's tests: a SQLite file and a fresh PostgreSQL one.

``registry_url`` runs a test once per database kind. The PostgreSQL server comes from
``$LOYALNET_TEST_POSTGRES`` (default below; ``bash scripts/postgres.sh`` starts it); each
test gets a database of its own, ``loyalnet_test_<hex>``, dropped afterwards even if a
connection is still open. ``LOYALNET_TEST_POSTGRES=skip`` skips the PostgreSQL half; an
unreachable server is an error, not a skip, so a broken setup is never mistaken for a pass.

conftest.py imports the fixtures from here, so every test file can ask for them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

POSTGRES_ENV = "LOYALNET_TEST_POSTGRES"
DEFAULT_POSTGRES = "postgresql+psycopg://loyalnet:loyalnet@127.0.0.1:5432/postgres"
DATABASE_KINDS = ("sqlite", "postgresql")


def _libpq(url: URL) -> dict[str, str | int]:
    """psycopg.connect keywords for a SQLAlchemy URL (psycopg cannot read the +driver)."""
    params: dict[str, str | int] = {"dbname": url.database or "postgres", "connect_timeout": 5}
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("user", url.username),
        ("password", url.password),
    ):
        if value is not None:
            params[key] = value
    return params


@pytest.fixture(scope="session")
def postgres_server_url() -> URL:
    """The PostgreSQL server the tests make their databases on (its maintenance database).

    Skips when ``$LOYALNET_TEST_POSTGRES`` is ``skip``; fails (an ERROR in the report) when
    the server cannot be reached.
    """
    value = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES).strip()
    if value == "skip":
        pytest.skip(f"PostgreSQL tests skipped: {POSTGRES_ENV}=skip")
    url = make_url(value)
    try:
        with psycopg.connect(**_libpq(url), autocommit=True) as connection:  # type: ignore[arg-type]
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        pytest.fail(
            f"cannot reach the test PostgreSQL server at "
            f"{url.render_as_string(hide_password=True)} ({str(error).strip()}); start it with "
            f"`bash scripts/postgres.sh`, point {POSTGRES_ENV} at another server, or set "
            f"{POSTGRES_ENV}=skip to leave PostgreSQL out",
            pytrace=False,
        )
    return url


@pytest.fixture(params=DATABASE_KINDS)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty registry database: a SQLite file in tmp_path, or a PostgreSQL
    database created for this test and dropped (WITH (FORCE)) after it."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'coordinator.db').as_posix()}"
        return
    server: URL = request.getfixturevalue("postgres_server_url")
    name = f"loyalnet_test_{secrets.token_hex(6)}"
    with psycopg.connect(**_libpq(server), autocommit=True) as connection:  # type: ignore[arg-type]
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**_libpq(server), autocommit=True) as connection:  # type: ignore[arg-type]
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
