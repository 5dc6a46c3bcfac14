"""The web front end's one table (schema `web`): the staff who sign in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field

from shared.service.rows import Row

SCHEMA = "web"


class StaffUser(Row, table=True):
    """A person who signs in: their role (a token role, docs/http.md) and, for a branch
    desk, their site; for a driver, their driver id. Passwords are argon2 hashes."""

    __tablename__ = "staff_user"
    __table_args__ = {"schema": SCHEMA}

    username: str = Field(primary_key=True)
    display_name: str
    role: str
    site: str | None = None
    driver: str | None = None
    password_hash: str
    active: bool = True
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
