"""Kafka setup shared by every service: topics, the relay's producer, the consumer broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from faststream.kafka import KafkaBroker

from shared.contracts import TOPICS
from shared.service.settings import Settings

log = logging.getLogger(__name__)


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic for a reason retrying will not change."""


async def ensure_topics(bootstrap: str, topics: Iterable[str] = TOPICS, partitions: int = 4,
                        timeout: float = 60.0, replication_factor: int = 1) -> None:
    """Create the contract's topics explicitly (auto-create would guess partition counts).

    A topic that already exists is left as it is. Any other per-topic error the broker
    answers is raised (`TopicCreationError`, e.g. a replication factor above the number of
    brokers), except retriable ones, which are retried until `timeout`.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            for name in missing:
                try:
                    response = await admin.create_topics([NewTopic(
                        name, num_partitions=partitions, replication_factor=replication_factor,
                    )])
                except TopicAlreadyExistsError:
                    continue
                _raise_topic_errors(response)
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"Kafka not reachable at {bootstrap}: {exc}") from exc
            log.info("waiting for Kafka", extra={"bootstrap": bootstrap, "error": repr(exc)})
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def _raise_topic_errors(response: Any) -> None:
    """Raise the first per-topic error of a CreateTopics answer (other than "exists")."""
    for entry in getattr(response, "topic_errors", None) or []:
        topic, code = entry[0], entry[1]
        if code == 0:
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else error.description
        if error.retriable:
            raise error(f"creating topic {topic!r}: {message}")
        raise TopicCreationError(f"creating topic {topic!r}: {error.__name__}: {message}")


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """acks=all so a publish counts only once the broker has it durably.

    Idempotence stays off: the embedded broker rejects aiokafka's InitProducerId; the outbox
    plus inbox already make re-publishing harmless.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=2,
        max_batch_size=512 * 1024,
        request_timeout_ms=30_000,
    )


def make_broker(settings: Settings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        logger=logging.getLogger(f"faststream.{client_id}"),
    )
