"""What the relational modules (users, courses, rooms, chat, artifacts) share: parsing an id
that names a row, paging a query, checking posted text, bulk inserts, fresh planner statistics
after a bulk load.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ARRAY, BigInteger, ColumnElement, Select, Text, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from knowledge.errors import InvalidInputError, NotFoundError


def text_array(values: Iterable[str]) -> ColumnElement[Any]:
    """The values as one ``text[]`` parameter. (SQLAlchemy's ``array(values)`` binds each
    element on its own: 6,000 names took 60-240 ms to bind and plan instead of 17 ms.)"""
    return literal(list(values), ARRAY(Text))


def any_text(values: Iterable[str]) -> ColumnElement[Any]:
    """``ANY(:values)`` over one ``text[]`` parameter (:func:`text_array`): for
    ``column == …`` against many values."""
    return func.any(text_array(values))


def any_integer(values: Iterable[int]) -> ColumnElement[Any]:
    """``ANY(:values)`` over one ``bigint[]`` parameter (a message id list: ``IN`` binds each
    id on its own, a few hundred ids cost more to bind than to read)."""
    return func.any(literal(list(values), ARRAY(BigInteger)))


#: Rows per statement of :func:`insert_records`.
RECORDS_PER_STATEMENT = 5000


async def insert_records(
    executor: AsyncSession | AsyncConnection,
    table: str,
    columns: str,
    rows: list[dict[str, Any]],
    conflict: str = "",
) -> None:
    """Bulk insert, one statement per batch: the rows as one JSON recordset (``columns`` is
    its definition, ``"name type, …"``; ``conflict`` an ``ON CONFLICT …`` clause). Far faster
    than executemany, and than array parameters, which the driver adapts element by element
    in Python (a busy entity's row holds thousands of chunk ids). float8 reads the JSON numbers
    exactly: ``json`` writes the shortest repr."""
    names = ", ".join(c.split()[0] for c in columns.split(", "))
    statement = text(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM "
        f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({columns}) {conflict}"
    )
    for start in range(0, len(rows), RECORDS_PER_STATEMENT):
        batch = rows[start : start + RECORDS_PER_STATEMENT]
        await executor.execute(statement, {"rows": json.dumps(batch, ensure_ascii=False)})


def parse_uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError(f"{what} {value!r} does not exist") from None


async def fetch_page(
    session: AsyncSession, query: Select[Any], limit: int, offset: int
) -> tuple[list[Any], int]:
    """One page of ``query``'s rows and the total count of rows it matches."""
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return list(rows), int(total)


def check_content(content: str, limit: int, what: str) -> str:
    if not content or not content.strip():
        raise InvalidInputError(f"{what} is empty")
    if len(content) > limit:
        raise InvalidInputError(f"{what} has {len(content)} characters; the limit is {limit}")
    return content


#: A statement that writes fewer rows than this never re-analyzes its table.
BULK_ROWS = 1000


async def analyze_after_bulk_load(session: AsyncSession, table: str, rows_written: int) -> bool:
    """``ANALYZE table`` when ``rows_written`` is a large share of it (a bulk import).

    Until autovacuum comes by (a minute at best), the planner sees the table as it was before
    the load: a room imported a moment ago is estimated at a few dozen messages, and the
    neighbour lookups of every query plan a bitmap scan of the whole room instead of one index
    step (70 ms instead of 1 ms per query at 10k messages). Runs in the caller's transaction,
    which sees its own rows.
    """
    if rows_written < BULK_ROWS:
        return False
    estimate = (
        await session.execute(
            text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": table},
        )
    ).scalar()
    if rows_written < 0.2 * float(estimate or 0):
        return False
    await session.execute(text(f'ANALYZE "{table}"'))
    return True
