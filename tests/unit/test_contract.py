"""The contract in docs/ and the code's event registry say the same thing.

docs/events.md is the published interface; these tests fail when a type, a topic, a
producer, a consumer, a field or its being required differs from the code, when a type a
service publishes is neither emitted anywhere nor marked reserved, and when the committed
AsyncAPI documents are not what the services generate (`make docs` rewrites them).
"""

from __future__ import annotations

import ast
import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from shared.contracts import EVENTS, SERVICES, Event
from shared.service.app import load_spec
from shared.service.asyncapi import document

ROOT = Path(__file__).resolve().parents[2]
EVENTS_MD = ROOT / "docs" / "events.md"
HEADER = re.compile(
    r"^topic: `(?P<topic>[^`]+)` · producer: (?P<producer>[^·]+?) · "
    r"consumers: (?P<consumers>[^·]+?) · status: (?P<status>published|reserved)$"
)


def _sections() -> dict[str, str]:
    text = EVENTS_MD.read_text(encoding="utf-8")
    parts = re.split(r"^### `([^`]+)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _tables(section: str) -> dict[str, list[tuple[str, str]]]:
    """Field tables of a section: '' for the event's own, 'lines[]' etc. for nested parts."""
    tables: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for line in section.splitlines():
        bold = re.match(r"^\*\*(?P<path>[^*]+)\*\*", line)
        if bold:
            current = bold["path"]
        elif line.startswith("| field |"):
            current = "" if current is None else current
            tables[current] = []
        elif line.startswith("| `") and current is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[current].append((cells[0].strip("`"), cells[2]))
    return tables


def _part(model: type[BaseModel], path: str) -> type[BaseModel]:
    """The nested model at a documented path like `lines[].distribution[]`."""
    for name in path.replace("[]", "").split("."):
        annotation = model.model_fields[name].annotation
        [inner] = [a for a in typing.get_args(annotation) if isinstance(a, type)] or [annotation]
        assert isinstance(inner, type) and issubclass(inner, BaseModel), path
        model = inner
    return model


def _fields(model: type[BaseModel]) -> list[tuple[str, str]]:
    return [(name, "yes" if f.is_required() else "no") for name, f in model.model_fields.items()]


def _consumers() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {t: [] for t in EVENTS}
    for service in SERVICES:
        for event_type in load_spec(service).handlers.by_type:
            found[event_type].append(service)
    return found


def test_every_registered_type_is_documented_and_nothing_else() -> None:
    assert sorted(_sections()) == sorted(EVENTS)


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_documented_type_matches_the_registry(event_type: str) -> None:
    cls = EVENTS[event_type]
    section = _sections()[event_type]
    header = next(HEADER.match(line) for line in section.splitlines() if HEADER.match(line))
    assert header is not None, f"{event_type}: no 'topic: … status: …' line"
    assert header["topic"] == cls.topic
    producer = "branch systems" if cls.producer == "branch" else cls.producer
    assert header["producer"] == producer
    assert header["status"] == ("reserved" if cls.reserved else "published")
    consumers = _consumers()[event_type]
    assert header["consumers"] == (", ".join(consumers) if consumers else "none yet")
    tables = _tables(section)
    assert tables.pop("") == _fields(cls), f"{event_type}: fields differ from the code"
    for path, rows in tables.items():
        assert rows == _fields(_part(cls, path)), f"{event_type} {path}: fields differ"


def _emitted_by(service: str) -> set[str]:
    """Payload classes passed to `….emit(Class(...))` anywhere in the service's code.

    `….emit(make(...))` counts too when `make` is a function of the service annotated to
    return a payload class.
    """
    trees = [ast.parse(p.read_text(encoding="utf-8"))
             for p in (ROOT / "services" / service).glob("*.py")]
    makers = {node.name: node.returns.id for tree in trees for node in ast.walk(tree)
              if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
              and isinstance(node.returns, ast.Name)}
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "emit" and node.args
                    and isinstance(node.args[0], ast.Call)
                    and isinstance(node.args[0].func, ast.Name)):
                called = node.args[0].func.id
                names.add(makers.get(called, called))
    return names


@pytest.mark.parametrize("cls", sorted(EVENTS.values(), key=lambda c: c.event_type),
                         ids=lambda c: c.event_type)
def test_a_published_type_is_emitted_or_handled_and_a_reserved_one_is_not(
    cls: type[Event],
) -> None:
    if cls.producer == "branch":  # produced outside; what counts is that someone handles it
        handled = bool(_consumers()[cls.event_type])
        assert handled != cls.reserved, (
            f"{cls.event_type}: {'handled but marked reserved' if handled else 'no handler'}")
        return
    emitted = cls.__name__ in _emitted_by(cls.producer)
    assert emitted != cls.reserved, (
        f"{cls.event_type}: {'emitted but marked reserved' if emitted else 'never emitted'}"
        f" by {cls.producer}")


@pytest.mark.parametrize("service", SERVICES)
def test_committed_asyncapi_document_is_current(service: str) -> None:
    committed = ROOT / "docs" / "asyncapi" / f"{service}.json"
    assert committed.exists(), f"{committed} missing: run `make docs`"
    generated = json.loads(json.dumps(document(load_spec(service))))
    assert json.loads(committed.read_text(encoding="utf-8")) == generated, (
        f"{committed} is stale: run `make docs`")
