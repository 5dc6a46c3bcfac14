"""In-memory fakes of the unit of work and its repositories: handler tests without I/O.

They honour the same contract as the SQL versions (tests/integration/test_repository.py
runs one suite against both), so a handler that passes here behaves the same on Postgres.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import inspect
from sqlmodel import SQLModel

from shared.messaging.unit_of_work import Repository, UnitOfWork
from shared.service.settings import Settings

M = TypeVar("M", bound=SQLModel)


class FakeRepository(Repository[M]):
    def __init__(self, model: type[M]) -> None:
        self.model = model
        [pk] = inspect(model).primary_key
        self.pk = pk.key
        self.rows: dict[Any, M] = {}
        self._next_id = 1

    def _key(self, row: M) -> Any:
        key = getattr(row, self.pk)
        if key is None:  # an autoincrement key, as Postgres would assign on flush
            key = self._next_id
            self._next_id += 1
            setattr(row, self.pk, key)
        return key

    async def get(self, key: Any) -> M | None:
        return self.rows.get(key)

    async def load(self, keys: Iterable[Any], *, lock: bool = False) -> None:
        return None

    async def find(self, field: str, values: Iterable[Any], *,
                   lock: bool = False) -> dict[Any, M]:
        wanted = set(values)
        return {getattr(r, field): r for r in self.rows.values() if getattr(r, field) in wanted}

    def add(self, row: M) -> None:
        key = self._key(row)
        if key in self.rows:
            raise ValueError(f"duplicate key {key!r} in {self.model.__name__}")
        self.rows[key] = row

    async def put(self, row: M) -> M:
        self.rows[self._key(row)] = row
        return row

    async def remove(self, row: M) -> None:
        self.rows.pop(self._key(row), None)


class FakeUnitOfWork(UnitOfWork):
    """Rows live in dicts; emitted events are kept in `emitted` for the test to read."""

    def __init__(self, service: str = "test", settings: Settings | None = None) -> None:
        super().__init__(f"branchline/{service}", settings or Settings())
        self.repos: dict[type[Any], FakeRepository[Any]] = {}

    def repo(self, model: type[M]) -> FakeRepository[M]:
        found = self.repos.get(model)
        if found is None:
            found = self.repos[model] = FakeRepository(model)
        return found

    def types(self) -> list[str]:
        """The types of the events emitted so far, in order."""
        return [e.type for e in self.emitted]
