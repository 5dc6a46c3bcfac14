"""The published interface: the CloudEvents envelope and one payload class per event type.

Importing this package registers every event type (one module per producer).
"""

from shared.contracts import acquisition, branch, cataloging, circulation, logistics
from shared.contracts.envelope import (
    CONTENT_TYPE,
    Envelope,
    InvalidEvent,
    check_subject,
    decode_json,
    make_event,
    new_id,
    parse_bytes,
    parse_envelope,
    parse_obj,
    payload_of,
    utcnow,
)
from shared.contracts.registry import (
    BRANCH_EVENTS,
    EVENTS,
    INGRESS_TOPICS,
    SERVICES,
    Event,
    dead_letter_topic,
    topics,
)

#: Every topic of the contract, dead-letter topics included.
TOPICS: tuple[str, ...] = topics()

__all__ = [
    "BRANCH_EVENTS",
    "CONTENT_TYPE",
    "EVENTS",
    "INGRESS_TOPICS",
    "SERVICES",
    "TOPICS",
    "Envelope",
    "Event",
    "InvalidEvent",
    "acquisition",
    "branch",
    "cataloging",
    "check_subject",
    "circulation",
    "dead_letter_topic",
    "decode_json",
    "logistics",
    "make_event",
    "new_id",
    "parse_bytes",
    "parse_envelope",
    "parse_obj",
    "payload_of",
    "utcnow",
]
