"""The cataloging pages: the processing queue (print labels, complete, with each refusal's
reason), the network search with holdings and facets, and MARC imports followed to the end
with a progress bar and their per-record report.

Everything is read from and sent to the cataloging service's HTTP API on the user's behalf.
The queue's actions answer on the page itself (the labels printed are the sheet to print,
which a redirect would lose); imports redirect to the job's own page.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from web import i18n
from web.app import Csrf, backend, language, redirect, render, role
from web.backend import BackendError
from web.models import StaffUser

router = APIRouter()

Cataloger = Annotated[StaffUser, Depends(role("cataloger"))]

#: Files sent through the web pages: the web front end spools a whole upload before
#: forwarding it, so it takes less than the service's 2 GiB; bigger files go through the
#: CLI (`branchline marc import`) or straight to the service's POST /imports.
MAX_WEB_UPLOAD = 50 * 1024 * 1024
#: Room for the multipart framing and the other form fields.
UPLOAD_SLACK = 64 * 1024
#: Forwarding a large file to the service may take longer than a page call.
UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=3.0)
LACKS = ("full_record", "call_number", "label")

i18n.add({
    "cat.title": {"zh": "编目", "en": "Cataloging"},
    "cat.queue": {"zh": "待加工图书", "en": "Processing queue"},
    "cat.queue_total": {"zh": "共 {n} 册", "en": "{n} items"},
    "cat.empty": {"zh": "队列里没有图书。", "en": "The queue is empty."},
    "cat.barcode": {"zh": "条码", "en": "Barcode"},
    "cat.book_title": {"zh": "题名", "en": "Title"},
    "cat.author": {"zh": "责任者", "en": "Author"},
    "cat.call_number": {"zh": "索书号", "en": "Call number"},
    "cat.branch": {"zh": "所属分馆", "en": "Owning branch"},
    "cat.lacks": {"zh": "尚缺", "en": "Lacks"},
    "cat.lacks.full_record": {"zh": "完整书目", "en": "full record"},
    "cat.lacks.call_number": {"zh": "索书号", "en": "call number"},
    "cat.lacks.label": {"zh": "书标", "en": "label"},
    "cat.lacks.all": {"zh": "全部", "en": "all"},
    "cat.nothing_lacking": {"zh": "可完成", "en": "ready"},
    "cat.show": {"zh": "只看尚缺", "en": "Show items lacking"},
    "cat.filter": {"zh": "筛选", "en": "Filter"},
    "cat.select": {"zh": "选择", "en": "Select"},
    "cat.select_all": {"zh": "全选", "en": "Select all"},
    "cat.print_labels": {"zh": "打印书标", "en": "Print labels"},
    "cat.complete": {"zh": "完成加工", "en": "Complete"},
    "cat.none_selected": {"zh": "请先勾选图书。", "en": "Select some items first."},
    "cat.labels_printed": {"zh": "已打印 {n} 张书标", "en": "{n} labels printed"},
    "cat.completed": {"zh": "已完成 {n} 册，送往所属分馆。",
                      "en": "{n} items completed and sent to their branches."},
    "cat.refused": {"zh": "未能处理", "en": "Refused"},
    "cat.reason": {"zh": "原因", "en": "Reason"},
    "cat.search": {"zh": "检索", "en": "Search"},
    "cat.search_label": {"zh": "题名、责任者、主题、ISBN 或分类号",
                         "en": "Title, author, subject, ISBN or class number"},
    "cat.results": {"zh": "共 {n} 种", "en": "{n} titles"},
    "cat.no_results": {"zh": "没有找到。", "en": "Nothing found."},
    "cat.holdings": {"zh": "馆藏", "en": "Holdings"},
    "cat.available": {"zh": "在架", "en": "On shelf"},
    "cat.unavailable": {"zh": "不在架", "en": "Not on shelf"},
    "cat.copies": {"zh": "册", "en": "copies"},
    "cat.facets": {"zh": "筛选", "en": "Refine"},
    "cat.facet_branches": {"zh": "分馆", "en": "Branches"},
    "cat.facet_availability": {"zh": "在架情况", "en": "Availability"},
    "cat.clear_filters": {"zh": "清除筛选", "en": "Clear filters"},
    "cat.publisher": {"zh": "出版者", "en": "Publisher"},
    "cat.classification": {"zh": "分类号", "en": "Class"},
    "cat.imports": {"zh": "MARC 导入", "en": "MARC imports"},
    "cat.import_file": {"zh": "MARC 文件（ISO 2709 或 MARCXML）",
                        "en": "MARC file (ISO 2709 or MARCXML)"},
    "cat.import_limit": {"zh": "网页上传不超过 50 MiB；更大的文件请用命令行 "
                               "branchline marc import。",
                         "en": "Web uploads up to 50 MiB; use `branchline marc import` for "
                               "larger files."},
    "cat.format": {"zh": "格式", "en": "Format"},
    "cat.format_auto": {"zh": "自动识别", "en": "detect"},
    "cat.on_match": {"zh": "与已有书目匹配时", "en": "When a record matches a bib"},
    "cat.on_match.overlay": {"zh": "覆盖", "en": "overlay"},
    "cat.on_match.keep": {"zh": "保留原书目", "en": "keep the bib"},
    "cat.on_match.merge": {"zh": "合并补缺", "en": "merge (fill gaps)"},
    "cat.upload": {"zh": "上传并导入", "en": "Upload and import"},
    "cat.recent_imports": {"zh": "最近的导入", "en": "Recent imports"},
    "cat.no_file": {"zh": "请选择文件。", "en": "Choose a file."},
    "cat.too_large": {"zh": "文件超过 50 MiB，请用命令行导入。",
                      "en": "The file is over 50 MiB: import it with the command line."},
    "cat.job": {"zh": "导入任务", "en": "Import job"},
    "cat.progress": {"zh": "进度", "en": "Progress"},
    "cat.status.queued": {"zh": "排队中", "en": "queued"},
    "cat.status.running": {"zh": "导入中", "en": "running"},
    "cat.status.done": {"zh": "已完成", "en": "done"},
    "cat.status.failed": {"zh": "失败", "en": "failed"},
    "cat.records": {"zh": "记录", "en": "Records"},
    "cat.outcome": {"zh": "结果", "en": "Outcome"},
    "cat.position": {"zh": "位置", "en": "Position"},
    "cat.rejected": {"zh": "被拒记录", "en": "Rejected records"},
    "cat.report": {"zh": "逐条报告", "en": "Per-record report"},
    "cat.next_page": {"zh": "下一页", "en": "Next page"},
    "cat.matched_by": {"zh": "匹配依据", "en": "Matched by"},
    "cat.count.created": {"zh": "新建", "en": "created"},
    "cat.count.overlaid": {"zh": "覆盖", "en": "overlaid"},
    "cat.count.merged": {"zh": "合并", "en": "merged"},
    "cat.count.kept": {"zh": "保留", "en": "kept"},
    "cat.count.rejected": {"zh": "拒绝", "en": "rejected"},
    "cat.count.items": {"zh": "新增馆藏", "en": "items created"},
    "cat.refresh": {"zh": "刷新", "en": "Refresh"},
})


def _queue_params(lacks: str, branch: str) -> dict[str, Any]:
    return {"lacks": lacks if lacks in LACKS else None, "branch": branch.strip() or None,
            "limit": 500}


async def _queue_page(request: Request, *, lacks: str = "", branch: str = "",
                      outcome: dict[str, Any] | None = None,
                      status_code: int = 200) -> HTMLResponse:
    queue = await backend(request).get("cataloging", "/queue", **_queue_params(lacks, branch))
    return render(request, "cat_queue.html", status_code=status_code, queue=queue,
                  lacks=lacks if lacks in LACKS else "", branch=branch, outcome=outcome,
                  lack_kinds=LACKS)


@router.get("/cataloging", response_class=HTMLResponse)
async def queue_page(request: Request, _: Cataloger, lacks: str = "",
                     branch: str = "") -> HTMLResponse:
    """The items in processing, oldest first, each with what it still lacks."""
    return await _queue_page(request, lacks=lacks, branch=branch)


@router.post("/cataloging/queue", response_class=HTMLResponse, dependencies=[Csrf])
async def queue_action(
    request: Request, _: Cataloger, action: Annotated[str, Form(max_length=20)],
    barcode: Annotated[list[str] | None, Form(max_length=64)] = None,
    lacks: Annotated[str, Form(max_length=20)] = "",
    branch: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    """Print labels for, or complete, the ticked items; the page then shows the labels
    (the sheet to print), what was completed, and each refusal with its reason."""
    barcodes = list(dict.fromkeys(b for b in barcode or [] if b.strip()))[:1000]
    if not barcodes:
        return await _queue_page(request, lacks=lacks, branch=branch, status_code=422,
                                 outcome={"problem": "cat.none_selected"})
    api = backend(request)
    if action == "labels":
        answer = await api.post("cataloging", "/queue/labels", {"barcodes": barcodes})
        outcome = {"labels": answer["labels"], "refused": answer["refused"]}
    elif action == "complete":
        answer = await api.post("cataloging", "/queue/complete", {"barcodes": barcodes})
        outcome = {"completed": answer["completed"], "refused": answer["refused"]}
    else:
        raise HTTPException(422, f"unknown action {action!r}")
    return await _queue_page(request, lacks=lacks, branch=branch, outcome=outcome)


@router.get("/cataloging/search", response_class=HTMLResponse)
async def search_page(request: Request, _: Cataloger, q: str = "", branch: str = "",
                      available: str = "") -> HTMLResponse:
    """One search across the network, with every branch's holdings and the facets."""
    found = None
    if q.strip():
        found = await backend(request).get(
            "cataloging", "/search", q=q.strip()[:200], branch=branch.strip() or None,
            available=available if available in ("true", "false") else None, limit=50)
    return render(request, "cat_search.html", q=q.strip(), branch=branch.strip(),
                  available=available, found=found)


# --- imports --------------------------------------------------------------------------------


async def upload_limit(request: Request) -> None:
    """Refuse an oversized upload from its Content-Length, before any of it is read (the
    CSRF check after this one parses the form and would spool it all)."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "an upload needs a Content-Length")
    if int(length) > MAX_WEB_UPLOAD + UPLOAD_SLACK:
        raise HTTPException(413, i18n.translate("cat.too_large", language(request)))


@router.get("/cataloging/imports", response_class=HTMLResponse)
async def imports_page(request: Request, _: Cataloger) -> HTMLResponse:
    jobs = await backend(request).get("cataloging", "/imports", limit=20)
    return render(request, "cat_imports.html", jobs=jobs, problem=None)


@router.post("/cataloging/imports", response_class=HTMLResponse,
             dependencies=[Depends(upload_limit), Csrf])
async def upload_import(request: Request, _: Cataloger) -> Response:
    """Forward the spooled upload to the service's POST /imports and follow the job."""
    form = await request.form()
    upload = form.get("file")
    marc_format = form.get("format")
    on_match = form.get("on_match")
    api = backend(request)
    problem = None
    if not isinstance(upload, UploadFile) or not upload.filename:
        problem = "cat.no_file"
    elif (upload.size or 0) > MAX_WEB_UPLOAD:
        problem = "cat.too_large"
    if problem is not None:
        jobs = await api.get("cataloging", "/imports", limit=20)
        return render(request, "cat_imports.html", status_code=422, jobs=jobs,
                      problem=problem)
    assert isinstance(upload, UploadFile)
    params = {k: v for k, v in (("format", marc_format), ("on_match", on_match))
              if isinstance(v, str) and v}
    try:
        job = await api.call("cataloging", "POST", "/imports", params=params,
                             files={"file": (upload.filename, upload.file,
                                             upload.content_type or "application/octet-stream")},
                             timeout=UPLOAD_TIMEOUT)
    except BackendError as exc:
        if exc.status >= 500:
            raise
        jobs = await api.get("cataloging", "/imports", limit=20)
        return render(request, "cat_imports.html", status_code=exc.status, jobs=jobs,
                      problem=exc.detail)
    finally:
        await upload.close()
    return redirect(f"/cataloging/imports/{job['job_id']}")


@router.get("/cataloging/imports/{job_id}", response_class=HTMLResponse)
async def import_job_page(request: Request, job_id: str, _: Cataloger,
                          after: int = -1) -> HTMLResponse:
    """The job's progress (the page polls the JSON route below until it ends), then its
    rejected records and the report a page at a time."""
    api = backend(request)
    job = await api.get("cataloging", f"/imports/{job_id}")
    records = rejected = None
    if job["status"] in ("done", "failed"):
        records = await api.get("cataloging", f"/imports/{job_id}/records",
                                after=max(after, -1), limit=100)
        rejected = await api.get("cataloging", f"/imports/{job_id}/records",
                                 outcome="rejected", limit=100)
    return render(request, "cat_import_job.html", job=job, records=records,
                  rejected=rejected)


@router.get("/cataloging/imports/{job_id}/progress")
async def import_progress(request: Request, job_id: str, _: Cataloger) -> JSONResponse:
    """The job as JSON, for the job page's script."""
    job = await backend(request).get("cataloging", f"/imports/{job_id}")
    return JSONResponse({k: job.get(k) for k in (
        "job_id", "status", "percent", "records_done", "created", "overlaid", "merged",
        "kept", "rejected", "items_created", "records_per_s", "error")},
        headers={"Cache-Control": "no-store"})
