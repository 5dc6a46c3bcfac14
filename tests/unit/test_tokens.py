"""Bearer tokens: checked once, remembered until they expire, never across keys."""

from __future__ import annotations

import time

import jwt
import pytest

from shared.service import auth

KEY = "k" * 48
OTHER = "o" * 48


def test_a_checked_token_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    token = auth.issue_token("desk", site="JX-HN-01", key=KEY)
    first = auth.decode_token(token, KEY)

    def no_check(*_: object, **__: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(auth.jwt, "decode", no_check)
    assert auth.decode_token(token, KEY) == first == auth.Principal(
        role="desk", site="JX-HN-01", subject="desk")


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "x", "role": "admin", "iat": now, "exp": now + 60}, KEY,
                       algorithm=auth.ALGORITHM)
    assert auth.decode_token(token, KEY).role == "admin"
    monkeypatch.setattr(auth.time, "time", lambda: now + 61.0)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _Later(now + 61), raising=False)
    with pytest.raises(jwt.ExpiredSignatureError):
        auth.decode_token(token, KEY)


def test_a_token_remembered_under_one_key_is_checked_under_another() -> None:
    token = auth.issue_token("admin", key=KEY)
    auth.decode_token(token, KEY)
    with pytest.raises(jwt.InvalidSignatureError):
        auth.decode_token(token, OTHER)


class _Later:
    """PyJWT reads the clock through `datetime.now(tz=...)`: this one is `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def now(self, tz: object = None) -> object:
        from datetime import UTC, datetime
        return datetime.fromtimestamp(self.at, tz=UTC)
