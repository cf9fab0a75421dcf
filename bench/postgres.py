"""A PostgreSQL database of one benchmark run, and reads of the shared store's rows and of the
database server's own processes."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from bench import procfs

POSTGRES_ADMIN_URL = os.environ.get(
    "VIDEOJOB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@contextlib.asynccontextmanager
async def bench_database(purpose: str) -> AsyncIterator[str]:
    """A new database on ``VIDEOJOB_BENCH_POSTGRES``'s server, its URL; dropped at the end."""
    name = f"videojob_bench_{purpose}_{os.getpid()}_{secrets.token_hex(3)}"
    admin: asyncpg.Connection[Any] = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def terminal_jobs(conn: asyncpg.Connection[Any]) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE status = ANY($1::text[])", list(TERMINAL)
    )
    return count


async def backend_cpu_seconds(conn: asyncpg.Connection[Any]) -> float | None:
    """The CPU time of the server processes of every other connection to this database (the
    services' pools and listeners), when they run on this machine; None when unreadable."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        return sum(procfs.cpu_seconds(row["pid"]) for row in rows)
    except OSError:
        return None
