"""Signing in, a wrong password, a page of another role or site, languages."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Web, new_page, shot, sign_in


async def test_sign_in_lands_on_the_roles_page_and_signs_out(browser: Any, web: Web) -> None:
    page = await new_page(browser, web)
    await page.goto("/admin/users")
    assert "/signin?next=/admin/users" in page.url  # not signed in: sent to sign in
    await shot(page, "signin-desktop")
    await page.fill("#username", "boss")
    await page.fill("#password", "correct-horse-7")
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")
    assert page.url.endswith("/admin/users")  # and then back where they were going
    await shot(page, "admin-users-desktop")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["branchline_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    await page.click("text=退出")
    await page.wait_for_load_state("networkidle")
    assert "/signin" in page.url
    await page.context.close()


async def test_a_wrong_password_is_refused_and_says_so(browser: Any, web: Web) -> None:
    page = await new_page(browser, web, lang="en")
    await sign_in(page, "cat", "not-the-password")
    assert "/signin" in page.url
    assert await page.locator("[role=alert]").inner_text() == "Wrong user name or password."
    await shot(page, "signin-wrong-password")
    await page.context.close()


async def test_a_form_without_its_csrf_token_is_refused(web: Web) -> None:
    r = await web.http.post(web.url + "/signin", data={"username": "cat",
                                                       "password": "correct-horse-7"})
    assert r.status_code == 403


async def test_pages_of_another_role_answer_403(browser: Any, web: Web) -> None:
    page = await new_page(browser, web)
    await sign_in(page, "drv")
    response = await page.goto("/admin/users")
    assert response.status == 403
    assert "无权访问" in await page.locator("h1").inner_text()
    await shot(page, "forbidden")
    await page.context.close()
