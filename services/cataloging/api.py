"""Cataloging's HTTP surface: look up items and titles, search the network, import MARC."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Depends, File, Query, UploadFile, status
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    literal_column,
    or_,
    text,
    union,
)
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.cataloging import domain, handlers, imports
from services.cataloging.marc import MarcFormat
from services.cataloging.models import Bib, ImportJob, ImportLine, Item, Site, bib_table
from shared.contracts import new_id, utcnow
from shared.errors import Invalid, NotFound
from shared.messaging.unit_of_work import one_of
from shared.service.app import BODY_LIMIT_KEY, ServiceDep, SessionDep
from shared.service.auth import Principal, current_principal, require

router = APIRouter()

#: A MARC file larger than this is refused (413) rather than read into memory.
MAX_IMPORT_BYTES = 20 * 1024 * 1024
#: The upload route's own body limit (instead of HTTP_MAX_BODY_BYTES): the file plus room
#: for the multipart framing; the body-limit middleware reads it from the route.
MAX_IMPORT_BODY_BYTES = MAX_IMPORT_BYTES + 64 * 1024


class BibView(BaseModel):
    bib_id: str
    isbn13: str | None
    isbn_valid: bool
    title: str
    author: str | None
    publisher: str | None
    year: int | None
    language: str | None = None
    classification: str | None = None
    classification_scheme: str | None = None
    subjects: list[str] = []
    has_marc: bool = False


class BranchHoldings(BaseModel):
    """Copies a branch owns, and copies available on its shelf now (owned or not)."""

    branch: str
    name: str | None
    holdings: int
    available: int


class BibWithHoldings(BibView):
    holdings: list[BranchHoldings]
    total_items: int
    total_available: int


class ItemView(BaseModel):
    barcode: str
    copy_id: str | None
    call_number: str
    owning_branch: str
    site: str
    status: str
    created_at: datetime
    cataloged_at: datetime | None = None
    withdrawn_reason: str | None = None
    bib: BibView


class BranchFacet(BaseModel):
    branch: str
    name: str | None
    #: Titles among the matches that this branch owns a copy of.
    titles: int


class AvailabilityFacet(BaseModel):
    #: Titles among the matches with a copy on a shelf now (at `branch` when one is given).
    available: int
    unavailable: int


class Facets(BaseModel):
    branches: list[BranchFacet]
    availability: AvailabilityFacet


class SearchResults(BaseModel):
    query: str
    #: Titles matched (the ranked candidates, at most CANDIDATES plus exact hits).
    total: int
    facets: Facets
    results: list[BibWithHoldings]


def _bib_view(bib: Bib) -> BibView:
    return BibView(bib_id=bib.bib_id, isbn13=bib.isbn13, isbn_valid=bib.isbn_valid,
                   title=bib.title, author=bib.author, publisher=bib.publisher, year=bib.year,
                   language=bib.language, classification=bib.classification,
                   classification_scheme=bib.classification_scheme, subjects=bib.subjects,
                   has_marc=bib.marc is not None)


async def _with_holdings(session: AsyncSession, bibs: Sequence[Bib]) -> list[BibWithHoldings]:
    """Per-branch counts for these bibs from one grouped read of their copies (with the
    sites' names), whatever their number."""
    ids = [b.bib_id for b in bibs]
    counts: dict[str, dict[str, list[int]]] = {i: {} for i in ids}
    names: dict[str, str] = {}
    if ids:
        owner, shelf = aliased(Site), aliased(Site)
        copies = await session.execute(
            sa_select(col(Item.bib_id), col(Item.owning_branch), col(owner.name),
                      col(Item.site), col(shelf.name), col(Item.status), func.count())
            .outerjoin(owner, col(owner.code) == col(Item.owning_branch))
            .outerjoin(shelf, col(shelf.code) == col(Item.site))
            .where(col(Item.bib_id).in_(ids), col(Item.status) != "withdrawn")
            .group_by(col(Item.bib_id), col(Item.owning_branch), col(owner.name),
                      col(Item.site), col(shelf.name), col(Item.status)))
        for bib_id, code, code_name, site, site_name, state, n in copies.all():
            counts[bib_id].setdefault(code, [0, 0])[0] += n
            names[code] = code_name
            if state == "available":
                counts[bib_id].setdefault(site, [0, 0])[1] += n
                names[site] = site_name
    out = []
    for bib in bibs:
        per_branch = [
            BranchHoldings(branch=code, name=names.get(code), holdings=h, available=a)
            for code, (h, a) in sorted(counts[bib.bib_id].items())
        ]
        out.append(BibWithHoldings(
            **_bib_view(bib).model_dump(), holdings=per_branch,
            total_items=sum(b.holdings for b in per_branch),
            total_available=sum(b.available for b in per_branch),
        ))
    return out


@router.get("/items/{barcode}", response_model=ItemView, tags=["items"])
async def get_item(
    barcode: str,
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
) -> ItemView:
    item = await session.get(Item, barcode)
    if item is None:
        raise NotFound(f"no item with barcode {barcode!r}")
    return await _item_view(session, item)


@router.get("/bibs/{bib_id}", response_model=BibWithHoldings, tags=["bibs"])
async def get_bib(
    bib_id: str,
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
) -> BibWithHoldings:
    bib = await session.get(Bib, bib_id)
    if bib is None:
        raise NotFound(f"no bib with id {bib_id!r}")
    return (await _with_holdings(session, [bib]))[0]


def _escaped(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: Text search configuration of the bib index: no stemming, no stop words (see
#: domain.search_tokens).
SIMPLE: ColumnElement[Any] = literal_column("'simple'::regconfig")
#: Rows a search ranks at most, besides exact ISBN and title hits.
CANDIDATES = 1_000
#: Matches a GIN index scan hands back at most for one query (gin_fuzzy_search_limit).
GIN_SAMPLE = 5_000


def _like_prefix(term: str) -> str:
    return f"{_escaped(term)}%"


SEARCH = bib_table.c


def _holds_copy(branch: str | None, available: bool | None) -> list[ColumnElement[bool]]:
    """The bib has a copy at `branch` (owned there or on its shelf) / on a shelf now, read
    from the bib's own holdings summary (`owners`, `shelves`: see models)."""
    if branch is None and available is None:
        return []
    # `cardinality(...) > 0` first: the GIN indexes hold only titles with copies (models).
    owned = and_(func.cardinality(SEARCH.owners) > 0, SEARCH.owners.contains([branch]))
    shelved = and_(func.cardinality(SEARCH.shelves) > 0, SEARCH.shelves.contains([branch]))
    if available is None:
        return [or_(owned, shelved)]
    on_shelf = shelved if branch is not None else func.cardinality(SEARCH.shelves) > 0
    return [on_shelf if available else ~on_shelf]


@router.get("/search", response_model=SearchResults, tags=["bibs"])
async def search(
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
    q: Annotated[str, Query(min_length=1, max_length=200,
                            description="words of the title, author or subjects, an ISBN, "
                                        "or the start of a class number")],
    branch: Annotated[str | None, Query(
        max_length=64, description="only titles this branch owns or has on its shelf")] = None,
    available: Annotated[bool | None, Query(
        description="true: only titles with a copy on a shelf now (at `branch` if given); "
                    "false: only titles without one")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchResults:
    """One search across the network: ranked titles with every branch's holdings and
    availability, and facets (titles per owning branch, available or not) over all the
    matches."""
    term = q.strip()
    if not term:
        raise Invalid("q must not be blank", field="q", kind="value_error", location="query")
    # Exact hits (the ISBN, the whole title) always; the rest are the first CANDIDATES
    # rows the indexes give, ranked among themselves: a word shared by 100,000 titles
    # costs no more than one shared by 1,000 (refine the query to go further).
    exact: list[ColumnElement[bool]] = [func.lower(SEARCH.title) == term.lower()]
    isbn = domain.normalize_isbn(term)
    if isbn is not None:
        exact.append(SEARCH.isbn13 == isbn.value)
    loose: list[ColumnElement[bool]] = [
        SEARCH.classification.like(_like_prefix(term.upper()), escape="\\"),  # I247.5
    ]
    words = domain.search_query(term)
    if words is not None:
        loose.append(SEARCH.search_vector.op("@@")(func.to_tsquery(SIMPLE, words)))
    filters = _holds_copy(branch, available)
    if not filters:
        # A GIN scan builds the bitmap of every match before LIMIT applies; for a word in
        # a tenth of the catalogue that is most of the time. Postgres' own soft cap makes
        # the index hand back a sample of that size instead (a no-op for rarer words).
        # A filtered search ANDs the word's bitmap with the branch's, which is small.
        await session.execute(text(f"SET LOCAL gin_fuzzy_search_limit = {GIN_SAMPLE}"))
    # The matches (at most CANDIDATES plus the exact hits) are ranked and counted in
    # Postgres, in one statement that hands back one row: the first `limit` ids, how many
    # matched, how many have a copy on a shelf, and titles per owning branch. Ranking:
    # exact hits first, then the titles the query makes up most of (fewest tokens:
    # "三国志" before "三国演义白鹿原"), then by title.
    columns = (SEARCH.bib_id, or_(*exact).label("exact"), SEARCH.title,
               func.coalesce(SEARCH.search_size, 0).label("size"), SEARCH.owners,
               SEARCH.shelves)
    matches = union(
        sa_select(*columns).where(or_(*exact), *filters),
        sa_select(*columns).where(or_(*loose), *filters).limit(CANDIDATES),
    ).cte("matches")
    m = matches.c
    ranked = sa_select(m.bib_id).order_by(m.exact.desc(), m.size, m.title, m.bib_id) \
        .limit(limit).subquery()
    on_shelf = (m.shelves.contains([branch]) if branch is not None
                else func.cardinality(m.shelves) > 0)
    owner = sa_select(func.unnest(m.owners).label("code")).subquery()
    per_owner = sa_select(owner.c.code, func.count().label("titles")) \
        .group_by(owner.c.code).subquery()
    summary = (await session.execute(sa_select(
        sa_select(func.array_agg(ranked.c.bib_id)).scalar_subquery().label("top"),
        sa_select(func.count()).select_from(matches).scalar_subquery().label("total"),
        sa_select(func.count()).select_from(matches).where(on_shelf).scalar_subquery()
        .label("on_shelf"),
        sa_select(func.json_agg(func.json_build_array(
            per_owner.c.code, col(Site.name), per_owner.c.titles)))
        .select_from(per_owner.outerjoin(Site, col(Site.code) == per_owner.c.code))
        .scalar_subquery().label("owners"),
    ))).one()
    top: list[str] = summary.top or []
    found = {b.bib_id: b for b in (await session.exec(
        select(Bib).where(one_of(col(Bib.bib_id), top)))).all()} if top else {}
    order = {bib_id: n for n, bib_id in enumerate(top)}  # array_agg keeps no order
    bibs = sorted((b for b in found.values()), key=lambda b: order[b.bib_id])
    branches = sorted(summary.owners or [], key=lambda o: (-o[2], o[0]))
    return SearchResults(
        query=term, total=summary.total,
        facets=Facets(branches=[BranchFacet(branch=code, name=name, titles=titles)
                                for code, name, titles in branches],
                      availability=AvailabilityFacet(
                          available=summary.on_shelf,
                          unavailable=summary.total - summary.on_shelf)),
        results=await _with_holdings(session, bibs))


# --- imports ----------------------------------------------------------------------------


class ImportJobView(BaseModel):
    """An import job and how far it got."""

    job_id: str
    filename: str
    status: Literal["queued", "running", "done", "failed"]
    format: str | None
    on_match: str
    bytes_total: int
    bytes_done: int
    percent: float
    records_done: int
    created: int
    overlaid: int
    merged: int
    kept: int
    rejected: int
    items_created: int
    records_per_s: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ImportRecordView(BaseModel):
    """What became of one record: its position in the file (from 0) and outcome."""

    position: int
    outcome: Literal["created", "overlaid", "merged", "kept", "rejected"]
    bib_id: str | None
    matched_by: Literal["isbn", "title"] | None
    reason: str | None


class ImportRecords(BaseModel):
    job_id: str
    records: list[ImportRecordView]
    #: Pass as `after` for the next page; None at the end.
    next_after: int | None


def _job_view(job: ImportJob) -> ImportJobView:
    rate = None
    if job.started_at is not None and job.records_done:
        end = job.finished_at or utcnow()
        rate = round(job.records_done / max((end - job.started_at).total_seconds(), 1e-3), 1)
    return ImportJobView(
        job_id=job.job_id, filename=job.filename, status=job.status,
        format=job.marc_format, on_match=job.on_match, bytes_total=job.bytes_total,
        bytes_done=job.bytes_done,
        percent=round(100 * job.bytes_done / job.bytes_total, 1) if job.bytes_total else 100.0,
        records_done=job.records_done, created=job.created, overlaid=job.overlaid,
        merged=job.merged, kept=job.kept, rejected=job.rejected,
        items_created=job.items_created, records_per_s=rate, error=job.error,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at)


#: An uploaded MARC file larger than this is refused (413): 2 GiB holds several million
#: records; the CLI streams bigger files in parts.
MAX_IMPORT_BYTES = 2 * 1024 ** 3
#: The upload route's own body limit (instead of HTTP_MAX_BODY_BYTES): the file plus room
#: for the multipart framing; the body-limit middleware reads it from the route.
MAX_IMPORT_BODY_BYTES = MAX_IMPORT_BYTES + 64 * 1024
_COPY_CHUNK = 1024 * 1024


def _spool(upload: BinaryIO, target: Path) -> int:
    """Copy the upload to the spool file; its size. Refuses what cannot be MARC."""
    head = upload.read(_COPY_CHUNK)
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not start:
        raise Invalid("not a MARC file: it is empty", field="file", kind="not_marc")
    if not (start[:5].isdigit() or start[:1] == b"<"):
        raise Invalid("not a MARC file: neither ISO 2709 (it would start with a 5-digit "
                      f"record length) nor MARCXML (got {start[:16]!r})", field="file",
                      kind="not_marc")
    size = 0
    with target.open("wb") as out:
        while head:
            out.write(head)
            size += len(head)
            head = upload.read(_COPY_CHUNK)
    return size


@router.post("/imports", status_code=status.HTTP_202_ACCEPTED, response_model=ImportJobView,
             tags=["imports"], openapi_extra={BODY_LIMIT_KEY: MAX_IMPORT_BODY_BYTES})
async def import_marc(
    service: ServiceDep,
    _: Annotated[Principal, require("cataloger")],
    file: Annotated[UploadFile, File(description="MARC records: ISO 2709 or MARCXML, "
                                                 "MARC 21 or UNIMARC/CNMARC")],
    marc_format: Annotated[MarcFormat | None, Query(
        alias="format", description="`marc21` or `unimarc` (CNMARC); default: seen from "
                                    "the first record")] = None,
    on_match: Annotated[domain.OnMatch, Query(
        description="a record matching a bib (by ISBN, else title + author + year): "
                    "replace the bib's description (`overlay`), leave the bib as it is "
                    "(`keep`) or fill in only what the bib lacks (`merge`). A brief bib "
                    "made from an order is always overlaid by a full record")] = "overlay",
) -> ImportJobView:
    """Start an import job for a MARC file; answered at once. Follow it at
    `GET /imports/{job_id}` and read its per-record report at `/imports/{job_id}/records`."""
    job_id = new_id()
    target = imports.spool_dir(service) / f"{job_id}.marc"
    try:
        size = await asyncio.to_thread(_spool, file.file, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    job = ImportJob(job_id=job_id, filename=file.filename or "upload", marc_format=marc_format,
                    on_match=on_match, spool_path=str(target), bytes_total=size,
                    created_at=utcnow())
    async with service.uow() as uow:
        uow.repo(ImportJob).add(job)
    service.spawn(imports.run(service, job_id), name=f"import-{job_id}")
    return _job_view(job)


@router.get("/imports", response_model=list[ImportJobView], tags=["imports"])
async def list_imports(
    session: SessionDep,
    _: Annotated[Principal, require("cataloger")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[ImportJobView]:
    """The latest import jobs, newest first."""
    jobs = (await session.exec(select(ImportJob).order_by(col(ImportJob.created_at).desc())
                               .limit(limit))).all()
    return [_job_view(j) for j in jobs]


@router.get("/imports/{job_id}", response_model=ImportJobView, tags=["imports"])
async def get_import(
    job_id: str,
    session: SessionDep,
    _: Annotated[Principal, require("cataloger")],
) -> ImportJobView:
    job = await session.get(ImportJob, job_id)
    if job is None:
        raise NotFound(f"no import job {job_id!r}")
    return _job_view(job)


@router.get("/imports/{job_id}/records", response_model=ImportRecords, tags=["imports"])
async def import_records(
    job_id: str,
    session: SessionDep,
    _: Annotated[Principal, require("cataloger")],
    outcome: Annotated[Literal["created", "overlaid", "merged", "kept", "rejected"] | None,
                       Query(description="only records with this outcome")] = None,
    after: Annotated[int, Query(ge=-1, le=2**31 - 1, description="position to start after")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ImportRecords:
    """The per-record report, in file order, a page at a time."""
    if await session.get(ImportJob, job_id) is None:
        raise NotFound(f"no import job {job_id!r}")
    query = select(ImportLine).where(col(ImportLine.job_id) == job_id,
                                     col(ImportLine.position) > after)
    if outcome is not None:
        query = query.where(col(ImportLine.outcome) == outcome)
    lines = (await session.exec(query.order_by(col(ImportLine.position)).limit(limit))).all()
    return ImportRecords(
        job_id=job_id,
        records=[ImportRecordView.model_validate(r, from_attributes=True) for r in lines],
        next_after=lines[-1].position if len(lines) == limit else None)


# --- the cataloging queue --------------------------------------------------------------------


class QueueItem(BaseModel):
    barcode: str
    bib_id: str
    isbn13: str | None
    title: str
    author: str | None
    call_number: str
    owning_branch: str
    created_at: datetime
    label_printed: bool
    lacks: list[domain.Lack]


class Queue(BaseModel):
    total: int
    items: list[QueueItem]


class Barcodes(BaseModel):
    barcodes: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                        Field(min_length=1, max_length=1000)]


class Refused(BaseModel):
    barcode: str
    reason: str


class Label(BaseModel):
    barcode: str
    call_number: str
    title: str
    owning_branch: str


class LabelsPrinted(BaseModel):
    labels: list[Label]
    refused: list[Refused]


class Completed(BaseModel):
    completed: list[str]
    refused: list[Refused]


class CallNumber(BaseModel):
    call_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                  max_length=100)]


class Withdrawal(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                             max_length=500)]


@router.get("/queue", response_model=Queue, tags=["queue"])
async def cataloging_queue(
    session: SessionDep,
    _: Annotated[Principal, require("cataloger")],
    branch: Annotated[str | None, Query(description="only copies this branch owns")] = None,
    lacks: Annotated[domain.Lack | None, Query(description="only items lacking this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Queue:
    """Items in processing, oldest first, each with what it still lacks."""
    query = (select(Item, Bib).join(Bib, col(Bib.bib_id) == col(Item.bib_id))
             .where(col(Item.cataloged_at).is_(None), col(Item.withdrawn_at).is_(None)))
    if branch is not None:
        query = query.where(col(Item.owning_branch) == branch)
    if lacks == "full_record":
        query = query.where(col(Bib.marc).is_(None))
    elif lacks == "call_number":
        query = query.where(col(Item.call_number).startswith(f"{domain.PROVISIONAL_CLASS}/"),
                            col(Bib.call_number).is_(None), col(Bib.classification).is_(None))
    elif lacks == "label":
        query = query.where(col(Item.label_printed_at).is_(None))
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = (await session.exec(query.order_by(col(Item.created_at), col(Item.barcode))
                               .offset(offset).limit(limit))).all()
    return Queue(total=total, items=[
        QueueItem(barcode=item.barcode, bib_id=bib.bib_id, isbn13=bib.isbn13, title=bib.title,
                  author=bib.author, call_number=item.call_number,
                  owning_branch=item.owning_branch, created_at=item.created_at,
                  label_printed=item.label_printed_at is not None,
                  lacks=domain.lacks(
                      full_record=bib.marc is not None,
                      call_number=(item.call_number if bib.classification is None
                                   and bib.call_number is None else "classified"),
                      label_printed=item.label_printed_at is not None))
        for item, bib in rows])


@router.post("/queue/labels", response_model=LabelsPrinted, tags=["queue"])
async def print_labels(
    body: Barcodes,
    service: ServiceDep,
    _: Annotated[Principal, require("cataloger")],
) -> LabelsPrinted:
    """Spine labels for these items (their call numbers given now where the title is
    classified); items without a call number are refused, each with why."""
    async with service.uow() as uow:
        printed, refused = await handlers.print_labels(uow, list(dict.fromkeys(body.barcodes)))
        titles = {b.bib_id: b.title for item in printed
                  if (b := await uow.repo(Bib).get(item.bib_id)) is not None}
        labels = [Label(barcode=i.barcode, call_number=i.call_number, title=titles[i.bib_id],
                        owning_branch=i.owning_branch) for i in printed]
    return LabelsPrinted(labels=labels,
                         refused=[Refused(barcode=r.barcode, reason=r.reason) for r in refused])


@router.post("/queue/complete", response_model=Completed, tags=["queue"])
async def complete(
    body: Barcodes,
    service: ServiceDep,
    _: Annotated[Principal, require("cataloger")],
) -> Completed:
    """Send shelf-ready items on (`cataloging.item_cataloged` each); the others stay in
    the queue and are listed with what they lack."""
    async with service.uow() as uow:
        done, refused = await handlers.complete_items(uow, list(dict.fromkeys(body.barcodes)))
    return Completed(completed=[i.barcode for i in done],
                     refused=[Refused(barcode=r.barcode, reason=r.reason) for r in refused])


async def _item_view(session: AsyncSession, item: Item) -> ItemView:
    bib = await session.get(Bib, item.bib_id)
    assert bib is not None  # foreign key
    return ItemView(barcode=item.barcode, copy_id=item.copy_id, call_number=item.call_number,
                    owning_branch=item.owning_branch, site=item.site, status=item.status,
                    created_at=item.created_at, cataloged_at=item.cataloged_at,
                    withdrawn_reason=item.withdrawn_reason, bib=_bib_view(bib))


@router.patch("/items/{barcode}", response_model=ItemView, tags=["items"])
async def set_call_number(
    barcode: str,
    body: CallNumber,
    service: ServiceDep,
    _: Annotated[Principal, require("cataloger")],
) -> ItemView:
    """Give one item the call number a cataloger chose."""
    async with service.uow() as uow:
        item = await handlers.set_call_number(uow, barcode, body.call_number)
        view = await _item_view(uow.session, item)
    return view


@router.post("/items/{barcode}/withdraw", response_model=ItemView, tags=["items"])
async def withdraw(
    barcode: str,
    body: Withdrawal,
    service: ServiceDep,
    _: Annotated[Principal, require("cataloger")],
) -> ItemView:
    """Withdraw a copy from the collection (`cataloging.item_withdrawn`); 409 while it is
    on loan, in transit or on a hold shelf."""
    async with service.uow() as uow:
        item = await handlers.withdraw_item(uow, barcode, body.reason)
        view = await _item_view(uow.session, item)
    return view
