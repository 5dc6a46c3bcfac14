"""The acquisitions pages: vendors and funds, building and opening an order line by line,
the receiving desk (scan an ISBN, receive copies) and the invoices.

Every page reads the acquisition service's HTTP API on the user's behalf; nothing here
keeps state of its own. After a POST the page redirects (POST/Redirect/GET) and the
outcome travels as a short flash in the signed session cookie, so a reload never sends a
receipt twice. The order form is the exception: a refused or half-built order is shown
again with what was typed, since retyping ten lines is worse than a resubmit prompt.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from web import i18n
from web.app import Csrf, backend, language, redirect, render, role
from web.backend import Backend, BackendError
from web.models import StaffUser

router = APIRouter()

Acq = Annotated[StaffUser, Depends(role("acquisitions"))]

#: An order built on the page has at most this many lines (a longer one is a quote list,
#: imported through the API's CSV route).
MAX_FORM_LINES = 50
#: A flash lives in the session cookie (about 4 KB in all): only this much of it is kept.
FLASH_MESSAGES, FLASH_CHARS = 8, 240

i18n.add({
    "acq.title": {"zh": "采访", "en": "Acquisitions"},
    "acq.funds": {"zh": "经费", "en": "Funds"},
    "acq.fund": {"zh": "经费", "en": "Fund"},
    "acq.fund_code": {"zh": "经费代码", "en": "Fund code"},
    "acq.fund_name": {"zh": "经费名称", "en": "Fund name"},
    "acq.budget": {"zh": "预算", "en": "Budget"},
    "acq.encumbered": {"zh": "已预留", "en": "Encumbered"},
    "acq.spent": {"zh": "已支出", "en": "Spent"},
    "acq.available": {"zh": "可用", "en": "Available"},
    "acq.year": {"zh": "年度", "en": "Year"},
    "acq.site": {"zh": "所属馆点（可空）", "en": "Site (optional)"},
    "acq.fund_warning": {"zh": "已超过预警比例", "en": "past its warning level"},
    "acq.balance": {"zh": "使用情况", "en": "Use"},
    "acq.add_fund": {"zh": "新增经费", "en": "Add a fund"},
    "acq.no_funds": {"zh": "还没有经费。", "en": "No funds yet."},
    "acq.vendors": {"zh": "供应商", "en": "Vendors"},
    "acq.vendor": {"zh": "供应商", "en": "Vendor"},
    "acq.vendor_id": {"zh": "供应商代码", "en": "Vendor code"},
    "acq.vendor_name": {"zh": "名称", "en": "Name"},
    "acq.email": {"zh": "电子邮件（可空）", "en": "Email (optional)"},
    "acq.discount": {"zh": "折扣 %", "en": "Discount %"},
    "acq.currency": {"zh": "币种", "en": "Currency"},
    "acq.add_vendor": {"zh": "新增供应商", "en": "Add a vendor"},
    "acq.no_vendors": {"zh": "还没有供应商。", "en": "No vendors yet."},
    "acq.formulas": {"zh": "分配方案", "en": "Distribution formulas"},
    "acq.orders": {"zh": "最近的订单", "en": "Recent orders"},
    "acq.order": {"zh": "订单", "en": "Order"},
    "acq.no_orders": {"zh": "还没有订单。", "en": "No orders yet."},
    "acq.new_order": {"zh": "新建订单", "en": "New order"},
    "acq.status": {"zh": "状态", "en": "Status"},
    "acq.lines": {"zh": "品种", "en": "Lines"},
    "acq.copies": {"zh": "册数", "en": "Copies"},
    "acq.received": {"zh": "已到", "en": "Received"},
    "acq.created": {"zh": "创建时间", "en": "Created"},
    "acq.total": {"zh": "金额", "en": "Total"},
    "acq.invoices": {"zh": "发票", "en": "Invoices"},
    "acq.invoice_number": {"zh": "发票号", "en": "Invoice number"},
    "acq.no_invoices": {"zh": "还没有发票。", "en": "No invoices yet."},
    "acq.receiving": {"zh": "验收", "en": "Receiving"},
    "acq.line": {"zh": "第 {n} 种", "en": "Line {n}"},
    "acq.isbn": {"zh": "ISBN", "en": "ISBN"},
    "acq.book_title": {"zh": "题名", "en": "Title"},
    "acq.author": {"zh": "责任者", "en": "Author"},
    "acq.price": {"zh": "单价", "en": "Unit price"},
    "acq.distribution": {"zh": "分配到分馆", "en": "Copies per branch"},
    "acq.distribution_hint": {"zh": "如 JX-HN-01:2, JX-TX-01:1",
                              "en": "e.g. JX-HN-01:2, JX-TX-01:1"},
    "acq.formula": {"zh": "或用分配方案", "en": "or a formula"},
    "acq.no_formula": {"zh": "（不用）", "en": "(none)"},
    "acq.branches": {"zh": "馆点代码", "en": "Branch codes"},
    "acq.add_line": {"zh": "再加一种", "en": "Add a line"},
    "acq.create_order": {"zh": "保存为草稿订单", "en": "Save as draft order"},
    "acq.open_order": {"zh": "下单（预留经费）", "en": "Open the order (encumber)"},
    "acq.opened": {"zh": "订单已下达。", "en": "The order is open."},
    "acq.order_created": {"zh": "草稿订单已保存。", "en": "Draft order saved."},
    "acq.unallocated": {"zh": "未分配", "en": "Unallocated"},
    "acq.est_price": {"zh": "折后价", "en": "Net price"},
    "acq.go_receive": {"zh": "去验收", "en": "Receive copies"},
    "acq.scan": {"zh": "扫描或输入 ISBN", "en": "Scan or type an ISBN"},
    "acq.filter": {"zh": "查找", "en": "Find"},
    "acq.show_all": {"zh": "显示全部", "en": "Show all"},
    "acq.expected": {"zh": "待到", "en": "Expected"},
    "acq.quantity": {"zh": "本次到货册数", "en": "Copies arrived"},
    "acq.receive": {"zh": "验收", "en": "Receive"},
    "acq.nothing_expected": {"zh": "没有待验收的图书。", "en": "Nothing is expected."},
    "acq.received_copies": {"zh": "已验收 {n} 册：{where}",
                            "en": "Received {n} copies: {where}"},
    "acq.vendor_added": {"zh": "供应商已保存。", "en": "Vendor saved."},
    "acq.fund_added": {"zh": "经费已保存。", "en": "Fund saved."},
    "acq.bad_number": {"zh": "不是有效的数字", "en": "is not a number"},
    "acq.bad_distribution": {"zh": "分配格式应为 馆点:册数，用逗号分隔",
                             "en": "write the distribution as BRANCH:copies, comma-separated"},
    "acq.no_lines": {"zh": "订单至少要有一种书（题名和单价必填）。",
                     "en": "An order needs at least one line (title and price)."},
    "acq.isbn_title_required": {"zh": "ISBN 和题名必填", "en": "ISBN and title are needed"},
    "acq.line_problem": {"zh": "第 {n} 种", "en": "line {n}"},
    "acq.back_overview": {"zh": "返回采访首页", "en": "Back to acquisitions"},
    "acq.draft_note": {"zh": "草稿不占用经费；下单时才预留。",
                       "en": "A draft commits no money; opening it encumbers the fund."},
})


# --- helpers --------------------------------------------------------------------------------


def _flash(request: Request, kind: str, *messages: str) -> None:
    """Keep the outcome of a POST for the page the browser is sent to next."""
    request.session["flash"] = {"kind": kind, "messages": [
        m[:FLASH_CHARS] for m in messages[:FLASH_MESSAGES]]}


def _take_flash(request: Request) -> dict[str, Any] | None:
    flash = request.session.pop("flash", None)
    return flash if isinstance(flash, dict) else None


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _say(request: Request, key: str, **values: Any) -> str:
    """A message in the user's language, for a flash or a problem list."""
    return i18n.translate(key, language(request)).format(**values)


def fund_bar(fund: dict[str, Any]) -> dict[str, float]:
    """Spent and encumbered as shares of the budget (percent, capped to the bar), the
    encumbered part drawn after the spent part."""
    budget = Decimal(str(fund.get("budget") or 0))
    if budget <= 0:
        return {"spent": 0.0, "encumbered": 0.0, "used": 0.0}
    spent = Decimal(str(fund.get("spent") or 0)) * 100 / budget
    encumbered = Decimal(str(fund.get("encumbered") or 0)) * 100 / budget
    shown_spent = min(spent, Decimal(100))
    shown_enc = min(encumbered, Decimal(100) - shown_spent)
    return {"spent": round(float(shown_spent), 2), "encumbered": round(float(shown_enc), 2),
            "used": round(float(spent + encumbered), 1)}


_SHARE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*[:：=×x*\s]\s*(\d+)\s*$")


def parse_distribution(text: str) -> list[dict[str, Any]] | None:
    """'JX-HN-01:2, JX-TX-01:1' (full-width punctuation too) as [{branch, copies}];
    None when it cannot be read. A branch named twice gets both counts."""
    shares: dict[str, int] = {}
    for part in re.split(r"[,，;；、\n]+", text):
        if not part.strip():
            continue
        m = _SHARE.match(part)
        if m is None or int(m.group(2)) < 1:
            return None
        shares[m.group(1).upper()] = shares.get(m.group(1).upper(), 0) + int(m.group(2))
    return [{"branch": b, "copies": n} for b, n in shares.items()]


def _blank_line() -> dict[str, str]:
    return {k: "" for k in ("isbn", "title", "author", "price", "copies", "distribution",
                            "formula")}


def _form_lines(form: FormData) -> list[dict[str, str]]:
    """The order form's lines as typed (fields `lines-N-isbn` ...), in order."""
    lines = []
    for n in range(MAX_FORM_LINES):
        if f"lines-{n}-title" not in form and f"lines-{n}-isbn" not in form:
            break
        lines.append({k: _text(form, f"lines-{n}-{k}") for k in _blank_line()})
    return lines


def _order_body(form: FormData, lines: list[dict[str, str]],
                request: Request) -> tuple[dict[str, Any], list[str]]:
    """The API's order body from the form, and what cannot be read (per line)."""
    problems: list[str] = []
    body_lines: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        if not any(line[k] for k in ("isbn", "title", "price", "distribution")):
            continue  # an empty line is left out, not refused
        where = _say(request, "acq.line_problem", n=n)
        if not line["isbn"] or not line["title"]:
            problems.append(f"{where}: {_say(request, 'acq.isbn_title_required')}")
        try:
            price = Decimal(line["price"] or "x")
            if not price.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            problems.append(f"{where}: {_say(request, 'acq.price')} "
                            f"{_say(request, 'acq.bad_number')}")
            price = Decimal(0)
        distribution = parse_distribution(line["distribution"])
        if distribution is None:
            problems.append(f"{where}: {_say(request, 'acq.bad_distribution')}")
            distribution = []
        copies_text = line["copies"]
        if copies_text and not copies_text.isdigit():
            problems.append(f"{where}: {_say(request, 'acq.copies')} "
                            f"{_say(request, 'acq.bad_number')}")
        copies = (int(copies_text) if copies_text.isdigit()
                  else sum(d["copies"] for d in distribution) or 1)
        body_lines.append({
            "isbn": line["isbn"], "title": line["title"],
            "author": line["author"] or None, "unit_price": str(price), "quantity": copies,
            "distribution": distribution,
            "formulas": [line["formula"]] if line["formula"] else []})
    if not body_lines:
        problems.append(_say(request, "acq.no_lines"))
    body = {"vendor_id": _text(form, "vendor_id"), "fund_code": _text(form, "fund_code"),
            "currency": _text(form, "currency").upper() or "CNY", "lines": body_lines}
    return body, problems


async def _sites(api: Backend) -> list[dict[str, Any]]:
    """The network's active sites, for the distribution hint (none if logistics is out)."""
    try:
        sites = await api.get("logistics", "/sites")
    except BackendError:
        return []
    return [s for s in sites if s.get("active") and s.get("kind") != "hub"]


async def _order_form(request: Request, api: Backend, *, lines: list[dict[str, str]],
                      values: dict[str, str], problems: list[str],
                      status_code: int = 200) -> HTMLResponse:
    vendors, funds, formulas = (await api.get("acquisition", "/vendors"),
                                await api.get("acquisition", "/funds"),
                                await api.get("acquisition", "/distribution-formulas"))
    return render(request, "acq_order_new.html", status_code=status_code, vendors=vendors,
                  funds=funds, formulas=formulas, sites=await _sites(api), lines=lines,
                  values=values, problems=problems)


# --- overview, vendors, funds ---------------------------------------------------------------


@router.get("/acquisitions", response_class=HTMLResponse)
async def overview(request: Request, _: Acq) -> HTMLResponse:
    """Funds with their balance bars, vendors, formulas, recent orders and invoices."""
    api = backend(request)
    funds = await api.get("acquisition", "/funds")
    for fund in funds:
        fund["bar"] = fund_bar(fund)
    return render(request, "acq_overview.html", flash=_take_flash(request), funds=funds,
                  vendors=await api.get("acquisition", "/vendors"),
                  formulas=await api.get("acquisition", "/distribution-formulas"),
                  orders=await api.get("acquisition", "/orders", limit=20),
                  invoices=await api.get("acquisition", "/invoices", limit=20))


async def _post_and_say(request: Request, path: str, body: dict[str, Any], done: str,
                        ) -> None:
    """POST to acquisition; the next page says it was done, or the service's refusal."""
    try:
        await backend(request).post("acquisition", path, body)
        _flash(request, "ok", _say(request, done))
    except BackendError as exc:
        if exc.status >= 500:
            raise
        _flash(request, "problem", exc.detail)


@router.post("/acquisitions/vendors", dependencies=[Csrf])
async def add_vendor(
    request: Request, _: Acq,
    vendor_id: Annotated[str, Form(max_length=64)], name: Annotated[str, Form(max_length=200)],
    currency: Annotated[str, Form(max_length=3)] = "CNY",
    discount_percent: Annotated[str, Form(max_length=10)] = "0",
    email: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    body = {"vendor_id": vendor_id.strip(), "name": name.strip(),
            "currency": currency.strip().upper() or "CNY",
            "discount_percent": discount_percent.strip() or "0", "email": email.strip() or None}
    await _post_and_say(request, "/vendors", body, "acq.vendor_added")
    return redirect("/acquisitions#vendors")


@router.post("/acquisitions/funds", dependencies=[Csrf])
async def add_fund(
    request: Request, _: Acq,
    fund_code: Annotated[str, Form(max_length=64)], name: Annotated[str, Form(max_length=200)],
    budget: Annotated[str, Form(max_length=20)],
    currency: Annotated[str, Form(max_length=3)] = "CNY",
    fiscal_year: Annotated[str, Form(max_length=4)] = "2026",
    site: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    body = {"fund_code": fund_code.strip(), "name": name.strip(), "budget": budget.strip(),
            "currency": currency.strip().upper() or "CNY",
            "fiscal_year": fiscal_year.strip() or "2026", "site": site.strip() or None}
    await _post_and_say(request, "/funds", body, "acq.fund_added")
    return redirect("/acquisitions#funds")


# --- orders ---------------------------------------------------------------------------------


@router.get("/acquisitions/orders/new", response_class=HTMLResponse)
async def new_order(request: Request, _: Acq) -> HTMLResponse:
    return await _order_form(request, backend(request), lines=[_blank_line()],
                             values={"currency": "CNY"}, problems=[])


@router.post("/acquisitions/orders", response_class=HTMLResponse, dependencies=[Csrf])
async def create_order(request: Request, _: Acq) -> Response:
    """`action=add_line` shows the form again with one more line (works without script);
    otherwise the draft order is recorded and the browser goes to it."""
    form = await request.form()
    api = backend(request)
    lines = _form_lines(form) or [_blank_line()]
    values = {k: _text(form, k) for k in ("vendor_id", "fund_code", "currency")}
    if _text(form, "action") == "add_line":
        if len(lines) < MAX_FORM_LINES:
            lines.append(_blank_line())
        return await _order_form(request, api, lines=lines, values=values, problems=[])
    body, problems = _order_body(form, lines, request)
    if problems:
        return await _order_form(request, api, lines=lines, values=values,
                                 problems=problems, status_code=422)
    try:
        created = await api.post("acquisition", "/orders", body)
    except BackendError as exc:
        if exc.status >= 500:
            raise
        return await _order_form(request, api, lines=lines, values=values,
                                 problems=[exc.detail], status_code=exc.status)
    warnings = [w["message"] for w in created.get("warnings", [])]
    _flash(request, "warn" if warnings else "ok", _say(request, "acq.order_created"),
           *warnings)
    return redirect(f"/acquisitions/orders/{created['order_id']}")


@router.get("/acquisitions/orders/{order_id}", response_class=HTMLResponse)
async def order_page(request: Request, order_id: str, _: Acq) -> HTMLResponse:
    order = await backend(request).get("acquisition", f"/orders/{order_id}")
    return render(request, "acq_order.html", order=order, flash=_take_flash(request))


@router.post("/acquisitions/orders/{order_id}/open", dependencies=[Csrf])
async def open_order(request: Request, order_id: str, _: Acq) -> Response:
    """Open (encumber) a draft; a refusal (409: fund past its stop level, copies without a
    branch, not a draft) is shown on the order page in the service's words."""
    try:
        opened = await backend(request).post("acquisition", f"/orders/{order_id}/open")
    except BackendError as exc:
        if exc.status >= 500:
            raise
        _flash(request, "problem", exc.detail)
    else:
        warnings = [w["message"] for w in opened.get("warnings", [])]
        _flash(request, "warn" if warnings else "ok", _say(request, "acq.opened"), *warnings)
    return redirect(f"/acquisitions/orders/{order_id}")


# --- receiving and invoices -----------------------------------------------------------------


@router.get("/acquisitions/receiving", response_class=HTMLResponse)
async def receiving(request: Request, _: Acq, isbn: str = "",
                    vendor_id: str = "") -> HTMLResponse:
    """The lines still expecting copies; a scanned ISBN narrows them to that book."""
    work = await backend(request).get("acquisition", "/receiving", isbn=isbn.strip() or None,
                                      vendor_id=vendor_id.strip() or None)
    return render(request, "acq_receiving.html", work=work, isbn=isbn.strip(),
                  vendor_id=vendor_id.strip(), flash=_take_flash(request))


@router.post("/acquisitions/receiving", dependencies=[Csrf])
async def receive(
    request: Request, _: Acq,
    order_id: Annotated[str, Form(max_length=64)], line_id: Annotated[str, Form(max_length=64)],
    quantity: Annotated[int, Form(ge=1, le=100_000)],
    isbn: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Receive copies of one line; the answer (which branch each copy goes to) is shown."""
    try:
        answer = await backend(request).post(
            "acquisition", f"/orders/{order_id}/receipts",
            {"line_id": line_id, "quantity": quantity})
    except BackendError as exc:
        if exc.status >= 500:
            raise
        _flash(request, "problem", exc.detail)
    else:
        per_branch: dict[str, int] = {}
        for copy in answer["copies"]:
            per_branch[copy["owning_branch"]] = per_branch.get(copy["owning_branch"], 0) + 1
        where = ", ".join(f"{b} × {n}" for b, n in per_branch.items())
        _flash(request, "ok", _say(request, "acq.received_copies", n=len(answer["copies"]),
                                   where=where))
    query = urlencode({"isbn": isbn}) if isbn else ""
    return redirect("/acquisitions/receiving" + (f"?{query}" if query else ""))
