"""Staff accounts: argon2-hashed passwords, one role each (and a site or a driver id when
the role is bound to one), managed from the admin page and `branchline users`."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.contracts import utcnow
from shared.service.auth import ROLES, SITE_ROLES
from web.models import StaffUser

_hasher = PasswordHasher()
#: Verified against when the user name is unknown, so a wrong name costs what a wrong
#: password does (no telling names apart by the time an answer takes).
_DUMMY = _hasher.hash(secrets.token_hex(16))
MIN_PASSWORD = 8


class UserProblem(ValueError):
    """A user that cannot be saved as given; says which field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check(username: str, role: str, site: str | None, driver: str | None,
          password: str | None) -> None:
    if not username.strip() or len(username) > 64 or not username.isprintable():
        raise UserProblem("username", "user name: 1 to 64 printable characters")
    if role not in ROLES:
        raise UserProblem("role", f"role must be one of: {', '.join(ROLES)}")
    if role in SITE_ROLES and not site:
        raise UserProblem("site", f"a {role} user works at one site: give its code")
    if role == "driver" and not driver:
        raise UserProblem("driver", "a driver user needs the driver id of the network file")
    if password is not None and len(password) < MIN_PASSWORD:
        raise UserProblem("password", f"password: at least {MIN_PASSWORD} characters")


async def save_user(session: AsyncSession, *, username: str, role: str,
                    password: str | None, display_name: str | None = None,
                    site: str | None = None, driver: str | None = None,
                    active: bool = True) -> StaffUser:
    """Create the user or change it (a None password keeps the one it has)."""
    username = username.strip()
    site, driver = (site or None), (driver or None)
    check(username, role, site, driver, password)
    user = await session.get(StaffUser, username)
    if user is None:
        if password is None:
            raise UserProblem("password", "a new user needs a password")
        user = StaffUser(username=username, display_name=display_name or username, role=role,
                         site=site, driver=driver, password_hash=_hasher.hash(password),
                         active=active, created_at=utcnow())
        session.add(user)
    else:
        user.role, user.site, user.driver, user.active = role, site, driver, active
        user.display_name = display_name or user.display_name
        if password is not None:
            user.password_hash = _hasher.hash(password)
    await session.commit()
    return user


async def authenticate(session: AsyncSession, username: str, password: str,
                       ) -> StaffUser | None:
    """The active user with this name and password, else None."""
    user = await session.get(StaffUser, username.strip())
    try:
        if user is None:
            _hasher.verify(_DUMMY, password)
            return None
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        await session.commit()
    return user


async def all_users(session: AsyncSession) -> list[StaffUser]:
    return list((await session.exec(select(StaffUser).order_by(col(StaffUser.username)))).all())


def new_password() -> str:
    """A password for a demo or newly made user: 12 characters, easy to type."""
    return secrets.token_urlsafe(9)
