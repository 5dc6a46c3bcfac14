"""The event registry: every event type of the contract, its topic and who produces it.

An event's type and topic are properties of its payload class, declared once with
`@event(...)`; routing, validation, the consumers' topic lists and docs/events.md all
follow from this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

#: The services of the network, in the order they are started and listed.
SERVICES: tuple[str, ...] = ("acquisition", "cataloging", "circulation", "logistics")

# Topics (without the deployment's KAFKA_TOPIC_PREFIX).
BRANCH_EVENTS = "branch.events"
ACQUISITION_ORDERS = "acquisition.orders"
CATALOGING_BIBS = "cataloging.bibs"
CATALOGING_ITEMS = "cataloging.items"
CIRCULATION_LOANS = "circulation.loans"
CIRCULATION_HOLDS = "circulation.holds"
CIRCULATION_TRANSFERS = "circulation.transfers"
NETWORK_SITES = "network.sites"
NETWORK_FLEET = "network.fleet"
LOGISTICS_SHIPMENTS = "logistics.shipments"
LOGISTICS_ROUTES = "logistics.routes"

#: Topics written by systems outside Branchline; their one consuming service must handle
#: (or dead-letter) every type, never skip one.
INGRESS_TOPICS: frozenset[str] = frozenset({BRANCH_EVENTS})


def dead_letter_topic(service: str) -> str:
    return f"dlq.{service}"


class Event(BaseModel):
    """Base of every event's `data`: tolerant of fields added later, typed by its class."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    topic: ClassVar[str]
    #: The producing service, or "branch" for branch systems (desks, self-check machines).
    producer: ClassVar[str]
    #: Registered with its shape fixed, but not emitted (or not handled) yet.
    reserved: ClassVar[bool] = False


class Part(BaseModel):
    """A nested part of an event's data (a line, a stop), not an event of its own."""

    model_config = ConfigDict(extra="ignore", frozen=True)


E = TypeVar("E", bound=type[Event])

#: type -> payload class. The single source of truth for routing and validation.
EVENTS: dict[str, type[Event]] = {}


def event(event_type: str, *, topic: str, reserved: bool = False) -> Callable[[E], E]:
    """Register a payload class as the `data` of `event_type`, published on `topic`.

    The producer is the contract module the class lives in (one module per producer).
    """

    def register(cls: E) -> E:
        if event_type in EVENTS:
            raise ValueError(f"event type {event_type!r} registered twice")
        cls.event_type = event_type
        cls.topic = topic
        cls.producer = cls.__module__.rsplit(".", 1)[-1]
        cls.reserved = reserved
        EVENTS[event_type] = cls
        return cls

    return register


def topics() -> tuple[str, ...]:
    """Every topic of the contract, dead-letter topics included; created at start-up."""
    return tuple(sorted({cls.topic for cls in EVENTS.values()}
                        | {dead_letter_topic(s) for s in SERVICES}))
