"""Bearer tokens (HS256 JWT) carrying one role and, for site- or driver-bound roles, whom.

`branchline token --role desk --site JX-HN-01` prints one for the local signing key.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.service.settings import Settings, load_settings

Role = Literal[
    "acquisitions", "cataloger", "branch_system", "desk", "dispatcher", "driver", "admin"
]
ROLES: tuple[str, ...] = get_args(Role)
SITE_ROLES = {"branch_system", "desk"}
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    role: str
    site: str | None = None
    driver: str | None = None
    subject: str = ""

    def may_speak_for(self, site: str) -> bool:
        """A branch token speaks only for its own site; staff roles for any."""
        return self.role not in SITE_ROLES or self.site == site


#: HS256 keys shorter than this are refused (RFC 7518 §3.2: at least the hash's 256 bits).
MIN_KEY_BYTES = 32


class WeakSigningKey(ValueError):
    """The signing key is too short to sign tokens with: the service refuses to start."""


def check_key(key: str, where: str) -> str:
    size = len(key.encode())
    if size < MIN_KEY_BYTES:
        raise WeakSigningKey(
            f"the signing key from {where} is {size} bytes; at least {MIN_KEY_BYTES} are "
            "required. Make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))' and set BRANCHLINE_SIGNING_KEY to it"
        )
    return key


def signing_key(settings: Settings | None = None) -> str:
    """The env key if set, else the project's local key file (created on first use).

    Raises `WeakSigningKey` if the key is shorter than `MIN_KEY_BYTES`.
    """
    settings = settings or load_settings()
    if settings.signing_key:
        return check_key(settings.signing_key, "BRANCHLINE_SIGNING_KEY")
    path = Path(settings.state_dir) / "signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return check_key(path.read_text().strip(), str(path))


def issue_token(role: str, *, site: str | None = None, driver: str | None = None,
                key: str | None = None, ttl_days: int = 30, subject: str | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    if role in SITE_ROLES and not site:
        raise ValueError(f"role {role!r} is bound to one site: give --site CODE")
    if role == "driver" and not driver:
        raise ValueError("role 'driver' is bound to one driver: give --driver ID")
    now = int(time.time())
    claims = {"sub": subject or role, "role": role, "iat": now, "exp": now + ttl_days * 86400}
    if site:
        claims["site"] = site
    if driver:
        claims["driver"] = driver
    return jwt.encode(claims, key or signing_key(), algorithm=ALGORITHM)


#: Tokens whose signature was checked, with their caller and expiry (see `decode_token`).
_checked: dict[tuple[str, str], tuple[Principal, float]] = {}
CHECKED_TOKENS = 4096


def decode_token(token: str, key: str) -> Principal:
    """The caller a token names, once its signature and expiry are checked.

    A desk sends the same token with every call, and checking an HMAC signature costs
    more than a lookup's own work, so a token checked once is remembered (up to
    `CHECKED_TOKENS` of them) until its `exp`; then it is refused as before.
    """
    hit = _checked.get((token, key))
    if hit is not None and time.time() < hit[1]:
        return hit[0]
    claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": ["exp"]})
    role = claims.get("role")
    if role not in ROLES:
        raise jwt.InvalidTokenError("unknown role")
    principal = Principal(role=role, site=claims.get("site"), driver=claims.get("driver"),
                          subject=str(claims.get("sub", "")))
    if len(_checked) >= CHECKED_TOKENS:
        _checked.clear()
    _checked[(token, key)] = (principal, float(claims["exp"]))
    return principal


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from its bearer token checked against the service's signing key.

    `async` (as every dependency here) though it awaits nothing: FastAPI runs a plain
    function in a worker thread, a thread hop per request for microseconds of work.
    """
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(get one with `branchline token --role ROLE`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return decode_token(creds.credentials, request.app.state.signing_key)
    except jwt.PyJWTError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"invalid token: {exc}",
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc


def require(*roles: str) -> Any:
    """Allow these roles (and admin); anyone else gets 403 naming what is needed."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)],
                         ) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role!r} may not do this; needs one of: "
                f"{', '.join(sorted({*roles, 'admin'}))}",
            )
        return principal

    return Depends(dependency)
