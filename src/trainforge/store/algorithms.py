"""Reads and writes of algorithm resources (table ``algorithms``, migration 0008)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from trainforge.store.db import Database
from trainforge.store.jobs import DuplicateName, contains_pattern, dumps, loads, past, put_tags
from trainforge.store.schema import algorithms, tags

SORT_COLUMNS = {"Name": (algorithms.c.name,), "CreationTime": (algorithms.c.creation_time, algorithms.c.name)}


@dataclass
class AlgorithmRow:
    name: str
    arn: str
    creation_time: float
    document: dict[str, Any]  # the CreateAlgorithm request, without Tags


class AlgorithmStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, account_id: str, region: str, row: AlgorithmRow, tag_list: Sequence[dict[str, str]]) -> None:
        try:
            with self.db.write() as conn:
                conn.execute(insert(algorithms).values(
                    account_id=account_id, region=region, name=row.name, arn=row.arn,
                    creation_time=row.creation_time, document=dumps(row.document)))
                if tag_list:
                    put_tags(conn, account_id, region, row.arn, tag_list)
        except IntegrityError as exc:
            raise DuplicateName(row.name) from exc

    def get(self, account_id: str, region: str, name: str) -> AlgorithmRow | None:
        with self.db.read() as conn:
            m = conn.execute(select(algorithms).where(
                algorithms.c.account_id == account_id, algorithms.c.region == region,
                algorithms.c.name == name)).first()
        return None if m is None else _row(m)

    def update_document(self, account_id: str, region: str, name: str, document: dict[str, Any]) -> None:
        with self.db.write() as conn:
            conn.execute(update(algorithms).where(
                algorithms.c.account_id == account_id, algorithms.c.region == region,
                algorithms.c.name == name).values(document=dumps(document)))

    def delete(self, account_id: str, region: str, row: AlgorithmRow) -> None:
        with self.db.write() as conn:
            conn.execute(delete(algorithms).where(
                algorithms.c.account_id == account_id, algorithms.c.region == region,
                algorithms.c.name == row.name))
            conn.execute(delete(tags).where(tags.c.account_id == account_id, tags.c.region == region,
                                            tags.c.resource_arn == row.arn))

    def list(self, account_id: str, region: str, *, name_contains: str | None, created_after: float | None,
             created_before: float | None, sort_by: str, descending: bool, after: Sequence[Any] | None,
             limit: int) -> list[AlgorithmRow]:
        keys = SORT_COLUMNS[sort_by]
        conds = [algorithms.c.account_id == account_id, algorithms.c.region == region]
        if name_contains:
            conds.append(algorithms.c.name.ilike(contains_pattern(name_contains), escape="\\"))
        if created_after is not None:
            conds.append(algorithms.c.creation_time > created_after)
        if created_before is not None:
            conds.append(algorithms.c.creation_time < created_before)
        if after is not None:
            conds.append(past(keys, after, descending))
        order = [k.desc() if descending else k.asc() for k in keys]
        with self.db.read() as conn:
            rows = conn.execute(select(algorithms).where(and_(*conds)).order_by(*order).limit(limit))
            return [_row(m) for m in rows]


def _row(m: Any) -> AlgorithmRow:
    return AlgorithmRow(m.name, m.arn, m.creation_time, loads(m.document))
