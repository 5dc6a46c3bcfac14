"""Kafka setup shared by every service: topics, the relay's producer, the consumer broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared.contracts import TOPICS
from shared.service.settings import Settings

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, topics: Iterable[str] = TOPICS, partitions: int = 4,
                        timeout: float = 60.0) -> None:
    """Create the contract's topics explicitly (auto-create would guess partition counts)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            for name in missing:
                try:
                    await admin.create_topics(
                        [NewTopic(name, num_partitions=partitions, replication_factor=1)]
                    )
                except TopicAlreadyExistsError:
                    pass
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"Kafka not reachable at {bootstrap}: {exc}") from exc
            log.info("waiting for Kafka", extra={"bootstrap": bootstrap, "error": repr(exc)})
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


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
