"""The CloudEvents 1.0 envelope every event travels in, and how a record becomes an event.

Consumers are tolerant readers (unknown fields are ignored); a record that does not match
its type's payload class is rejected with the path of each bad field, so the dead-letter
reason and the HTTP 4xx say exactly what to fix.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.contracts.branch import BranchEvent
from shared.contracts.registry import EVENTS, Event

CONTENT_TYPE = "application/cloudevents+json"


class Envelope(BaseModel):
    """A CloudEvents 1.0 structured-mode event; `data` stays a dict until typed by `payload_of`."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: AwareDatetime
    subject: str = Field(min_length=1)
    datacontenttype: str | None = "application/json"
    schemaversion: int = 1
    correlationid: str | None = None
    causationid: str | None = None
    data: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        """The de-duplication key: CloudEvents' (source, id)."""
        return (self.source, self.id)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """A record that can never be handled: it goes to the dead-letter topic, not a retry."""

    def __init__(self, reason: str, error_type: str, fields: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.fields = fields or []


def describe(exc: ValidationError, prefix: str = "") -> tuple[str, list[str]]:
    """A validation error as one readable reason and the dotted path of each bad field."""
    fields: list[str] = []
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        name = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "body"
        fields.append(name)
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts), fields


def parse_envelope(obj: Any) -> Envelope:
    try:
        return Envelope.model_validate(obj)
    except ValidationError as exc:
        reason, fields = describe(exc)
        raise InvalidEvent(reason, "invalid_envelope", fields) from exc


def payload_of(envelope: Envelope) -> Event:
    """Validate `data` against the payload class registered for `type`."""
    cls = EVENTS.get(envelope.type)
    if cls is None:
        raise InvalidEvent(f"type: unknown event type {envelope.type!r}", "unknown_type", ["type"])
    try:
        payload = cls.model_validate(envelope.data)
    except ValidationError as exc:
        reason, fields = describe(exc, "data.")
        raise InvalidEvent(reason, "invalid_data", fields) from exc
    if cls.producer == "branch":
        branch = getattr(payload, "branch", None)
        if envelope.source != f"branch/{branch}":
            raise InvalidEvent(
                f"source: must be 'branch/{branch}' for an event of branch {branch!r}",
                "invalid_source",
                ["source"],
            )
    return payload


def check_subject(envelope: Envelope, payload: Event) -> None:
    """A branch event's subject must be its item barcode (patron for holds): `wrong_subject`."""
    bound = payload.subject_field() if isinstance(payload, BranchEvent) else None
    if bound is not None and envelope.subject != bound[1]:
        field, value = bound
        raise InvalidEvent(f"subject: must be data.{field} {value!r}, "
                           f"not {envelope.subject!r}", "wrong_subject", ["subject"])


def parse_obj(obj: Any) -> tuple[Envelope, Event]:
    envelope = parse_envelope(obj)
    return envelope, payload_of(envelope)


def parse_bytes(raw: bytes | None) -> tuple[Envelope, Event]:
    """Parse one Kafka record value; raise InvalidEvent saying why it can't be handled."""
    return parse_obj(decode_json(raw))


def decode_json(raw: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object, or InvalidEvent("not_json")."""
    if raw is None:
        raise InvalidEvent("value: empty record (tombstone)", "not_json")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"value: not JSON ({exc})", "not_json") from exc
    if not isinstance(obj, dict):
        raise InvalidEvent("value: a JSON object is required", "not_json")
    return obj


#: The variant nibble of an RFC 4122 UUID (binary 10xx), by a random hex digit.
_VARIANT = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}
#: Random bytes for ids, read 2 KiB at a time (one system call per 128 ids); one pool per
#: thread, and a forked child starts with none of its parent's.
_POOL = threading.local()
_POOL_BYTES = 2048


def _fresh_pools() -> None:
    global _POOL
    _POOL = threading.local()


os.register_at_fork(after_in_child=_fresh_pools)


def new_id() -> str:
    """A random (version 4) UUID as text: what `str(uuid.uuid4())` gives, at a third of
    its cost (every event gets one)."""
    pool = _POOL
    at = getattr(pool, "at", _POOL_BYTES * 2)
    if at >= _POOL_BYTES * 2:
        pool.hex, at = os.urandom(_POOL_BYTES).hex(), 0
    h = pool.hex[at:at + 32]
    pool.at = at + 32
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_event(
    data: Event,
    *,
    subject: str,
    source: str,
    cause: Envelope | None = None,
    time: datetime | None = None,
    event_id: str | None = None,
) -> Envelope:
    """Build an outgoing event; its type is its payload's class, `cause` carries the chain."""
    correlation = None
    if cause is not None:
        correlation = cause.correlationid or cause.id
    # Built from already-validated parts, so construct without validating a second time:
    # this runs for every event a service emits.
    return Envelope.model_construct(
        specversion="1.0",
        id=event_id or new_id(),
        source=source,
        type=data.event_type,
        time=time or utcnow(),
        subject=subject,
        datacontenttype="application/json",
        schemaversion=1,
        correlationid=correlation,
        causationid=cause.id if cause is not None else None,
        data=data.model_dump(mode="json", exclude_none=True),
    )
