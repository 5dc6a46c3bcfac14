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
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
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
    "acq.invoice": {"zh": "发票", "en": "Invoice"},
    "acq.enter_invoice": {"zh": "录入发票", "en": "Enter invoice"},
    "acq.choose_order": {"zh": "为哪张订单录入发票", "en": "Invoice for which order"},
    "acq.no_invoiceable": {"zh": "没有可开票的订单（须已下单）。",
                           "en": "No order can be invoiced yet (it must be open)."},
    "acq.next": {"zh": "继续", "en": "Continue"},
    "acq.to_invoice": {"zh": "已到未开票", "en": "Received, not invoiced"},
    "acq.pending_invoices": {"zh": "另有 {n} 册在未付款发票上",
                             "en": "{n} more on unpaid invoices"},
    "acq.invoice_quantity": {"zh": "开票册数", "en": "Copies billed"},
    "acq.invoice_price": {"zh": "开票单价", "en": "Unit price billed"},
    "acq.amount": {"zh": "金额", "en": "Amount"},
    "acq.relieved": {"zh": "释放预留", "en": "Relieved"},
    "acq.variance": {"zh": "差额", "en": "Variance"},
    "acq.paid_at": {"zh": "付款时间", "en": "Paid at"},
    "acq.source": {"zh": "来源", "en": "Source"},
    "acq.save_invoice": {"zh": "保存发票", "en": "Save the invoice"},
    "acq.invoice_saved": {"zh": "发票已保存，尚未付款。",
                          "en": "Invoice saved; not paid yet."},
    "acq.pay": {"zh": "付款（从预留转为支出）", "en": "Pay (encumbrance becomes spending)"},
    "acq.paid": {"zh": "发票已付款：释放预留 {relieved}，支出 {total}，差额 {variance}。",
                 "en": "Invoice paid: {relieved} relieved, {total} spent, variance {variance}."},
    "acq.invoice_note": {"zh": "只填本发票所列的品种；册数为 0 的品种不计入。付款时才动用经费。",
                         "en": "Fill in only the lines this invoice bills; a line of 0 copies "
                               "is left out. Money moves when the invoice is paid."},
    "acq.no_invoice_lines": {"zh": "发票至少要有一种书（册数大于 0）。",
                             "en": "An invoice needs at least one line with copies."},
    "acq.bad_count": {"zh": "应为 0 或正整数", "en": "should be 0 or a whole number"},
    "acq.invoice_number_required": {"zh": "发票号必填", "en": "the invoice number is needed"},
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


#: An order can be invoiced once it is opened (and until it is closed or cancelled).
INVOICEABLE = ("open", "partially_received", "received")


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


# --- invoices -------------------------------------------------------------------------------


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def _pending_on_drafts(api: Backend, vendor_id: str) -> dict[str, int]:
    """Copies per order line already on this vendor's unpaid invoices (not yet counted in
    the line's `invoiced`, which moves when an invoice is paid)."""
    pending: dict[str, int] = {}
    for invoice in await api.get("acquisition", "/invoices", status="draft",
                                 vendor_id=vendor_id, limit=500):
        for line in invoice["lines"]:
            pending[line["line_id"]] = pending.get(line["line_id"], 0) + line["quantity"]
    return pending


async def _invoice_form(request: Request, api: Backend, order_id: str, *,
                        values: dict[str, str] | None = None,
                        typed: dict[str, dict[str, str]] | None = None,
                        errors: dict[str, list[str]] | None = None,
                        status_code: int = 200) -> HTMLResponse:
    """The invoice form for one order: each line with what is received and not invoiced,
    prefilled (or with what was typed, when the form comes back refused)."""
    order = await api.get("acquisition", f"/orders/{order_id}")
    pending = await _pending_on_drafts(api, order["vendor_id"])
    lines = []
    for ln in order["lines"]:
        waiting = pending.get(ln["line_id"], 0)
        to_invoice = max(ln["received"] - ln["invoiced"] - waiting, 0)
        entered = (typed or {}).get(ln["line_id"]) or {
            "quantity": str(to_invoice), "price": str(ln["estimated_price"])}
        lines.append({**ln, "to_invoice": to_invoice, "pending": waiting, **{
            f"typed_{k}": v for k, v in entered.items()}})
    errors = errors or {}
    return render(request, "acq_invoice_new.html", status_code=status_code, order=order,
                  lines=lines, values=values or {"currency": order["currency"]},
                  errors=errors, problems=[m for ms in errors.values() for m in ms])


def _invoice_errors(problem: Any, lines: list[str]) -> dict[str, list[str]]:
    """The service's refusal by form field: `invoice_number`, `currency`, `line:<id>` for
    a line of the body (the body's lines are `lines`, in order), `_` for the rest."""
    detail = problem.get("detail") if isinstance(problem, dict) else problem
    errors: dict[str, list[str]] = {}
    if not isinstance(detail, list):
        key = "invoice_number" if isinstance(problem, dict) and problem.get(
            "status") == 409 and "already sent invoice" in str(detail) else "_"
        return {key: [str(detail)]}
    for entry in detail:
        loc = list(entry.get("loc") or [])[1:] if isinstance(entry, dict) else []
        msg = str(entry.get("msg")) if isinstance(entry, dict) else str(entry)
        where = ".".join(str(p) for p in loc)
        if loc[:1] in (["invoice_number"], ["currency"]):
            key = str(loc[0])
        elif len(loc) >= 2 and loc[0] == "lines" and isinstance(loc[1], int) \
                and loc[1] < len(lines):
            key = f"line:{lines[loc[1]]}"
        else:
            key = "_"
        errors.setdefault(key, []).append(f"{where}: {msg}" if where else msg)
    return errors


@router.get("/acquisitions/invoices/new", response_class=HTMLResponse)
async def new_invoice(request: Request, _: Acq, order_id: str = "") -> HTMLResponse:
    """Enter a vendor's invoice for an order; without an order, choose one first."""
    api = backend(request)
    if order_id.strip():
        return await _invoice_form(request, api, order_id.strip())
    orders = [o for o in await api.get("acquisition", "/orders", limit=200)
              if o["status"] in INVOICEABLE]
    return render(request, "acq_invoice_pick.html", orders=orders)


@router.post("/acquisitions/invoices", response_class=HTMLResponse, dependencies=[Csrf])
async def create_invoice(request: Request, _: Acq) -> Response:
    """Record the invoice (POST /invoices) and go to it; a refusal (409 a number the vendor
    already sent, 422 per field) comes back on the form with what was typed."""
    form = await request.form()
    api = backend(request)
    order_id = _text(form, "order_id")
    order = await api.get("acquisition", f"/orders/{order_id}")
    values = {"invoice_number": _text(form, "invoice_number"),
              "currency": _text(form, "currency").upper()}
    typed: dict[str, dict[str, str]] = {}
    errors: dict[str, list[str]] = {}
    body_lines: list[dict[str, Any]] = []
    body_line_ids: list[str] = []
    if not values["invoice_number"]:
        errors["invoice_number"] = [_say(request, "acq.invoice_number_required")]
    for n, ln in enumerate(order["lines"], start=1):
        quantity = _text(form, f"lines-{ln['line_id']}-quantity")
        price = _text(form, f"lines-{ln['line_id']}-price")
        typed[ln["line_id"]] = {"quantity": quantity, "price": price}
        where = _say(request, "acq.line_problem", n=n)
        if not quantity.isdigit():
            if quantity:
                errors.setdefault(f"line:{ln['line_id']}", []).append(
                    f"{where}: {_say(request, 'acq.invoice_quantity')} "
                    f"{_say(request, 'acq.bad_count')}")
            continue
        if int(quantity) == 0:
            continue  # not on this invoice
        try:
            unit = Decimal(price or "x")
            if not unit.is_finite() or unit < 0:
                raise InvalidOperation
        except InvalidOperation:
            errors.setdefault(f"line:{ln['line_id']}", []).append(
                f"{where}: {_say(request, 'acq.invoice_price')} "
                f"{_say(request, 'acq.bad_number')}")
            continue
        body_lines.append({"order_id": order_id, "line_id": ln["line_id"],
                           "quantity": int(quantity),
                           "amount": str(_money(unit * int(quantity)))})
        body_line_ids.append(ln["line_id"])
    if not body_lines and not errors:
        errors["_"] = [_say(request, "acq.no_invoice_lines")]
    if errors:
        return await _invoice_form(request, api, order_id, values=values, typed=typed,
                                   errors=errors, status_code=422)
    answer = await api.call("acquisition", "POST", "/invoices", ok=(409, 422), json={
        "vendor_id": order["vendor_id"], "invoice_number": values["invoice_number"],
        "currency": values["currency"] or order["currency"], "lines": body_lines})
    if not isinstance(answer, dict) or "invoice_id" not in answer:
        status = answer.get("status", 422) if isinstance(answer, dict) else 422
        return await _invoice_form(request, api, order_id, values=values, typed=typed,
                                   errors=_invoice_errors(answer, body_line_ids),
                                   status_code=status if status in (409, 422) else 422)
    _flash(request, "ok", _say(request, "acq.invoice_saved"))
    return redirect(f"/acquisitions/invoices/{answer['invoice_id']}")


@router.get("/acquisitions/invoices/{invoice_id}", response_class=HTMLResponse)
async def invoice_page(request: Request, invoice_id: str, _: Acq) -> HTMLResponse:
    """One invoice: its lines (with each order line's ISBN and title), status, and once
    paid what each line relieved and its variance; a draft has the pay button."""
    api = backend(request)
    invoice = await api.get("acquisition", f"/invoices/{invoice_id}")
    ordered: dict[str, dict[str, Any]] = {}
    for order_id in dict.fromkeys(ln["order_id"] for ln in invoice["lines"]):
        order = await api.get("acquisition", f"/orders/{order_id}")
        ordered.update({ln["line_id"]: ln for ln in order["lines"]})
    for ln in invoice["lines"]:
        ln["ordered"] = ordered.get(ln["line_id"], {})
        ln["unit"] = _money(Decimal(str(ln["amount"])) / ln["quantity"])
    return render(request, "acq_invoice.html", invoice=invoice, flash=_take_flash(request))


@router.post("/acquisitions/invoices/{invoice_id}/pay", dependencies=[Csrf])
async def pay_invoice(request: Request, invoice_id: str, _: Acq) -> Response:
    """Pay (POST /invoices/{id}/pay): the page then says what was relieved and the variance;
    a 409 (paid already, more copies than ordered) is shown in the service's words."""
    try:
        paid = await backend(request).post("acquisition", f"/invoices/{invoice_id}/pay")
    except BackendError as exc:
        if exc.status >= 500:
            raise
        _flash(request, "problem", exc.detail)
    else:
        relieved = sum((Decimal(str(ln["relieved"] or 0)) for ln in paid["lines"]),
                       Decimal(0))
        variance = sum((Decimal(str(ln["variance"] or 0)) for ln in paid["lines"]),
                       Decimal(0))
        _flash(request, "ok", _say(request, "acq.paid", relieved=f"{relieved:.2f}",
                                   total=paid["total"], variance=f"{variance:.2f}"))
    return redirect(f"/acquisitions/invoices/{invoice_id}")
