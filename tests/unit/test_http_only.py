"""CONSUME=false: a process of a service that answers HTTP and joins no consumer group."""

import asyncio

import pytest

from shared.service.app import Service, load_spec
from shared.service.settings import Settings


def _service(consume: bool) -> Service:
    settings = Settings(database_url="postgresql+asyncpg://u:p@127.0.0.1:1/db",
                        kafka_bootstrap_servers="127.0.0.1:1", consume=consume)
    return Service(load_spec("circulation"), settings)


def test_an_http_only_process_subscribes_to_nothing() -> None:
    assert len(list(_service(True).broker.subscribers)) > 0
    assert list(_service(False).broker.subscribers) == []


def test_consume_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUME", "false")
    assert Settings(database_url="postgresql+asyncpg://u:p@h/db").consume is False


def test_an_http_only_process_does_not_report_waiting_consumers() -> None:
    service = _service(False)

    async def checks() -> dict[str, object]:
        async def no(*_: object, **__: object) -> bool:
            return False
        service.broker.ping = no  # type: ignore[method-assign]
        return await service.health()

    found = asyncio.run(checks())
    assert found["consumers"] == "ok"  # not "starting", though it was never started
    assert found["database"] == "unreachable"  # the checks still ran


def test_relay_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(database_url="postgresql+asyncpg://u:p@h/db").relay is True
    monkeypatch.setenv("RELAY", "false")
    assert Settings(database_url="postgresql+asyncpg://u:p@h/db").relay is False
