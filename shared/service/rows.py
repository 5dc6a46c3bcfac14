"""`Row`: the base of every service's tables, built for consumers that make rows by the
thousand.

SQLModel's constructor sets each field through pydantic and SQLAlchemy's attribute events
(about 0.1 ms a row); a batch of 500 new items, transfers and shipments spent most of its
time there. Table models are not validated by SQLModel anyway, so `Row` writes the given
values and the field defaults straight into the instance's dict, which is where both
SQLAlchemy (for the INSERT) and pydantic (for reading) look. Everything after construction
— attribute sets, change tracking, flushes — is SQLAlchemy's as usual.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic_core import PydanticUndefined
from sqlmodel import SQLModel


class Row(SQLModel):
    #: New rows of this table skip the ORM's per-row bookkeeping (~70 µs a row, most of a
    #: check-in's flush): the unit of work writes them with its outbox rows in one
    #: statement at commit (`BulkInserts` in shared/messaging/unit_of_work.py). For tables
    #: a hot handler inserts into by the hundred.
    inserted_in_bulk: ClassVar[bool] = False

    _defaults: ClassVar[dict[type, dict[str, Any]]] = {}
    _mutable: ClassVar[dict[type, tuple[str, ...]]] = {}
    # `cls.model_fields` is a deprecation-guarded property call in pydantic 2.11+.
    _fields: ClassVar[dict[type, frozenset[str]]] = {}

    def __init__(self, **data: Any) -> None:
        cls = type(self)
        if not cls.model_config.get("table"):
            super().__init__(**data)
            return
        defaults = Row._defaults.get(cls)
        if defaults is None:
            Row._fields[cls] = frozenset(cls.model_fields)
            defaults = Row._defaults[cls] = {
                name: f.default for name, f in cls.model_fields.items()
                if f.default is not PydanticUndefined and f.default_factory is None}
            Row._mutable[cls] = tuple(name for name, value in defaults.items()
                                      if isinstance(value, list | dict | set))
        unknown = data.keys() - Row._fields[cls]
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
        self.__dict__.update(defaults)
        for name in Row._mutable[cls]:  # each row its own list, as pydantic would copy it
            self.__dict__[name] = copy.copy(defaults[name])
        self.__dict__.update(data)
        object.__setattr__(self, "__pydantic_fields_set__", set(data))

    if not TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any:
            # SQLAlchemy asks every new row whether it has its state yet (`hasattr`);
            # pydantic's answer goes through private attributes, extras and the class first.
            if name == "_sa_instance_state":
                raise AttributeError(name)
            return super().__getattr__(name)
