"""The one family of domain errors: refusals a rule makes, turned into HTTP in one place.

Domain code raises these without knowing about HTTP; shared/service/problems.py answers
them as problem responses (403, 404, 409, 422 naming the field).
"""

from __future__ import annotations


class DomainError(Exception):
    """A use case refused; `message` says why in words a member of staff can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """What the request names does not exist."""


class Forbidden(DomainError):
    """The caller may not act on what the request names (another driver's route)."""


class Conflict(DomainError):
    """The request is valid but the current state refuses it (already exists, over budget)."""


class Invalid(DomainError):
    """Bad input: `field` is the path of the offending field (dotted, e.g. `lines.0.isbn`).

    `location` is where the field is (`body`, `query`, `path`); `kind` is the machine-readable
    reason a client can branch on (`invalid`, `unknown_site`, `not_marc`, ...).
    """

    def __init__(self, message: str, field: str | None = None,
                 errors: list[tuple[str, str]] | None = None, *,
                 kind: str = "invalid", location: str = "body") -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind
        self.location = location
        #: Every (field, message) pair when several fields are wrong at once.
        self.errors = errors if errors is not None else [(field or "", message)]
