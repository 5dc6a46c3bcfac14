"""Cataloging's HTTP surface: look up items and titles, search the network, import MARC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status
from pydantic import BaseModel
from sqlalchemy import ColumnElement, case, func, literal_column, or_, text, union
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.cataloging import domain, handlers
from services.cataloging.marc import MarcFormat, NotMarc, read_marc
from services.cataloging.models import Bib, Item, Site
from shared.errors import Conflict, Invalid, NotFound
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
    bib: BibView


class SearchResults(BaseModel):
    query: str
    results: list[BibWithHoldings]


class SkippedRecord(BaseModel):
    index: int
    reason: str


class ImportReport(BaseModel):
    imported: int
    updated: int
    kept: int = 0
    skipped: list[SkippedRecord]


def _bib_view(bib: Bib) -> BibView:
    return BibView(bib_id=bib.bib_id, isbn13=bib.isbn13, isbn_valid=bib.isbn_valid,
                   title=bib.title, author=bib.author, publisher=bib.publisher, year=bib.year,
                   language=bib.language, classification=bib.classification,
                   classification_scheme=bib.classification_scheme, subjects=bib.subjects,
                   has_marc=bib.marc is not None)


async def _with_holdings(session: AsyncSession, bibs: Sequence[Bib]) -> list[BibWithHoldings]:
    """Per-branch counts for these bibs in two grouped queries, whatever their number."""
    ids = [b.bib_id for b in bibs]
    counts: dict[str, dict[str, list[int]]] = {i: {} for i in ids}
    if ids:
        owned = await session.exec(
            select(Item.bib_id, Item.owning_branch, func.count())
            .where(col(Item.bib_id).in_(ids), col(Item.status) != "withdrawn")
            .group_by(col(Item.bib_id), col(Item.owning_branch))
        )
        for bib_id, branch, n in owned:
            counts[bib_id].setdefault(branch, [0, 0])[0] = n
        on_shelf = await session.exec(
            select(Item.bib_id, Item.site, func.count())
            .where(col(Item.bib_id).in_(ids), col(Item.status) == "available")
            .group_by(col(Item.bib_id), col(Item.site))
        )
        for bib_id, site, n in on_shelf:
            counts[bib_id].setdefault(site, [0, 0])[1] = n
    codes = {code for per_bib in counts.values() for code in per_bib}
    names: dict[str, str] = {}
    if codes:
        rows = await session.exec(select(Site.code, Site.name).where(col(Site.code).in_(codes)))
        names = dict(rows.all())
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
    bib = await session.get(Bib, item.bib_id)
    assert bib is not None  # foreign key
    return ItemView(barcode=item.barcode, copy_id=item.copy_id, call_number=item.call_number,
                    owning_branch=item.owning_branch, site=item.site, status=item.status,
                    created_at=item.created_at, bib=_bib_view(bib))


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


@router.get("/search", response_model=SearchResults, tags=["bibs"])
async def search(
    session: SessionDep,
    _: Annotated[Principal, Depends(current_principal)],
    q: Annotated[str, Query(min_length=1, max_length=200,
                            description="words of the title or author, or an ISBN")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchResults:
    """One search across the network: titles with every branch's holdings and availability."""
    term = q.strip()
    if not term:
        raise Invalid("q must not be blank", field="q", kind="value_error", location="query")
    # Exact hits (the ISBN, the whole title) always; the rest are the first CANDIDATES
    # rows the indexes give, ranked among themselves: a word shared by 100,000 titles
    # costs no more than one shared by 1,000 (refine the query to go further).
    exact: list[ColumnElement[bool]] = [func.lower(col(Bib.title)) == term.lower()]
    isbn = domain.normalize_isbn(term)
    if isbn is not None:
        exact.append(col(Bib.isbn13) == isbn.value)
    loose: list[ColumnElement[bool]] = [
        col(Bib.classification).like(_like_prefix(term.upper()), escape="\\"),  # I247.5
    ]
    rank: list[ColumnElement[Any]] = []
    words = domain.search_query(term)
    if words is not None:  # the same expression as the GIN index, so the index answers
        vector = func.to_tsvector(SIMPLE, col(Bib.search_text))
        query = func.to_tsquery(SIMPLE, words)
        loose.append(vector.op("@@")(query))
        rank.append(func.ts_rank(vector, query).desc())
    # A GIN scan builds the bitmap of every match before LIMIT applies; for a word in a
    # tenth of the catalogue that is most of the time. Postgres' own soft cap makes the
    # index hand back a sample of that size instead (a no-op for rarer words).
    await session.execute(text(f"SET LOCAL gin_fuzzy_search_limit = {GIN_SAMPLE}"))
    candidates = union(
        sa_select(col(Bib.bib_id)).where(or_(*exact)),
        sa_select(col(Bib.bib_id)).where(or_(*loose)).limit(CANDIDATES),
    ).subquery()
    exact_first = case((or_(*exact), 0), else_=1)
    bibs = (await session.exec(
        select(Bib).join(candidates, candidates.c.bib_id == col(Bib.bib_id))
        .order_by(exact_first, *rank, col(Bib.title), col(Bib.bib_id)).limit(limit)
    )).all()
    return SearchResults(query=term, results=await _with_holdings(session, bibs))


#: Records per transaction of an import.
IMPORT_BATCH = 5_000


@router.post("/imports", status_code=status.HTTP_201_CREATED, response_model=ImportReport,
             tags=["bibs"], openapi_extra={BODY_LIMIT_KEY: MAX_IMPORT_BODY_BYTES})
async def import_marc(
    service: ServiceDep,
    _: Annotated[Principal, require("cataloger")],
    file: Annotated[UploadFile, File(description="MARC 21 or UNIMARC/CNMARC records, "
                                                 "binary ISO 2709")],
    marc_format: Annotated[MarcFormat | None, Query(
        alias="format", description="`marc21` or `unimarc` (CNMARC); default: seen from "
                                    "the first record")] = None,
    on_match: Annotated[Literal["overlay", "keep"], Query(
        description="a record whose ISBN matches a bib: replace the bib's fields "
                    "(`overlay`) or leave the bib as it is (`keep`)")] = "overlay",
) -> ImportReport:
    """Create or update bibs by ISBN from a MARC file; unreadable records are listed.

    Records are committed in batches of IMPORT_BATCH, so a file of any size holds no
    long transaction; a batch that fails is answered with how many records went in."""
    data = await file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"file: larger than {MAX_IMPORT_BYTES} bytes; split it")
    try:
        records = read_marc(data, marc_format)
    except NotMarc as exc:
        raise Invalid(str(exc), field="file", kind="not_marc") from exc
    result = handlers.ImportResult()
    for start in range(0, len(records), IMPORT_BATCH):
        try:
            async with service.uow() as uow:
                result.add(await handlers.import_bibs(
                    uow, records[start:start + IMPORT_BATCH], overlay=on_match == "overlay",
                    first_index=start))
        except IntegrityError as exc:  # another import or receipt created the bib first
            raise Conflict(
                f"a bib for one of records {start}..{start + IMPORT_BATCH - 1} was created at "
                f"the same moment; the {start} records before them are in. Send the file "
                "again: what is already in is matched, not doubled") from exc
    return ImportReport(imported=result.imported, updated=result.updated, kept=result.kept,
                        skipped=[SkippedRecord(index=s.index, reason=s.reason)
                                 for s in result.skipped])
