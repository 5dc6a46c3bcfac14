"""The web front end's pure parts: user checks, password hashing, words, service errors."""

from __future__ import annotations

import httpx
import pytest
from argon2 import PasswordHasher

from shared.service.auth import decode_token
from web import app, i18n, users
from web.backend import Backend, BackendError
from web.models import StaffUser
from web.settings import WebSettings

KEY = "k" * 40


@pytest.mark.parametrize(("args", "field"), [
    (("", "desk", "JX-HN-01", None, "long-enough"), "username"),
    (("ann", "librarian", None, None, "long-enough"), "role"),
    (("ann", "desk", None, None, "long-enough"), "site"),
    (("ann", "driver", None, None, "long-enough"), "driver"),
    (("ann", "cataloger", None, None, "short"), "password"),
])
def test_a_user_that_cannot_work_is_refused_naming_the_field(
        args: tuple[str, str, str | None, str | None, str], field: str) -> None:
    with pytest.raises(users.UserProblem) as problem:
        users.check(*args)
    assert problem.value.field == field


def test_passwords_are_argon2_hashes_that_verify() -> None:
    hashed = users._hasher.hash("correct-horse-7")
    assert hashed.startswith("$argon2id$") and "correct-horse-7" not in hashed
    assert PasswordHasher().verify(hashed, "correct-horse-7")


def test_words_fall_back_to_english_then_to_the_key() -> None:
    i18n.add({"test.only_en": {"en": "Only English"}})
    assert i18n.translate("signin.title", "zh") == "登录"
    assert i18n.translate("signin.title", "en") == "Sign in"
    assert i18n.translate("test.only_en", "zh") == "Only English"
    assert i18n.translate("no.such.key", "zh") == "no.such.key"


def _backend(handler: httpx.MockTransport, user: StaffUser) -> Backend:
    return Backend(httpx.AsyncClient(transport=handler), WebSettings(), KEY, user)


def _user(**kw: str | None) -> StaffUser:
    return StaffUser(username="ann", display_name="Ann", role=kw.get("role") or "desk",
                     site=kw.get("site", "JX-HN-01"), driver=None, password_hash="x",
                     created_at=None)  # type: ignore[arg-type]


async def test_calls_carry_a_token_of_the_users_role_and_site() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"].removeprefix("Bearer "))
        return httpx.Response(200, json={"ok": True})
    backend = _backend(httpx.MockTransport(answer), _user())
    assert await backend.get("circulation", "/items/JX1") == {"ok": True}
    principal = decode_token(seen[0], KEY)
    assert (principal.role, principal.site, principal.subject) == ("desk", "JX-HN-01", "ann")


async def test_a_refusal_says_the_services_own_words_per_field() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": [
            {"loc": ["body", "lines", 0, "isbn"], "msg": "not an ISBN", "type": "value_error"}]},
            headers={"content-type": "application/problem+json"})
    backend = _backend(httpx.MockTransport(answer), _user())
    with pytest.raises(BackendError) as refused:
        await backend.post("acquisition", "/orders", {})
    assert refused.value.status == 422
    assert refused.value.detail == "lines.0.isbn: not an ISBN"


async def test_a_service_that_does_not_answer_is_a_503_saying_which() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")
    backend = _backend(httpx.MockTransport(answer), _user())
    with pytest.raises(BackendError) as down:
        await backend.get("logistics", "/sites")
    assert down.value.status == 503 and "logistics is not answering" in down.value.detail


@pytest.mark.parametrize(("target", "expected"), [
    ("/admin/users", "/admin/users"), ("/desk/JX-HN-01?x=1", "/desk/JX-HN-01?x=1"),
    ("//evil.example", "/"), ("/\\evil.example", "/"), ("https://evil.example", "/"),
    ("evil", "/"), ("/\r\nSet-Cookie: x", "/"),
])
def test_after_sign_in_only_a_path_of_this_site_is_followed(target: str, expected: str) -> None:
    assert app._local(target) == expected


def test_a_desk_form_sent_again_is_the_same_event_and_another_book_is_another() -> None:
    from web.pages.desk import _event

    form = "6f1c1d1e-8d5b-4c1a-9a63-0c6b7c1f2a3b"
    first = _event("branch.checkin", "JX-HN-01", "JX0000000018", form)
    again = _event("branch.checkin", "JX-HN-01", "JX0000000018", form)
    other = _event("branch.checkin", "JX-HN-01", "JX0000000026", form)
    lent = _event("branch.checkout", "JX-HN-01", "JX0000000018", form, patron="R-1")
    assert first["id"] == again["id"]
    assert len({first["id"], other["id"], lent["id"]}) == 3
    assert _event("branch.checkin", "JX-HN-01", "JX0000000018", None)["id"] != first["id"]
