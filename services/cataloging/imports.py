"""Import jobs: an uploaded MARC file read into bibs in the background, batch by batch.

The upload is spooled to disk and answered at once with the job; the job then streams the
file (services.cataloging.marc.iter_marc: constant memory whatever its size) and commits
each batch of `IMPORT_BATCH` records with its report lines and the job's counters in one
transaction (handlers.write_import), planning the next batch meanwhile (`_import`). A
job whose process died is picked up again by any replica once its heartbeat is older than
`STALE_AFTER` and goes on from the last committed record: nothing is imported twice,
nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from queue import Empty
from typing import BinaryIO

from sqlalchemy import func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.cataloging import domain, handlers, marc
from services.cataloging.marc import MarcFormat, NotMarc
from services.cataloging.models import ImportJob
from shared.contracts import utcnow
from shared.service.app import Service

log = logging.getLogger(__name__)

#: Records per transaction: big enough that a batch costs a few round trips per thousand
#: records, small enough that a resumed job redoes little.
IMPORT_BATCH = 5_000
#: Files at least this big are read by a process of their own, on another core; smaller
#: ones in a thread (a process costs a second to start).
READER_PROCESS_BYTES = 8 * 1024 * 1024
#: A running job whose heartbeat is older than this is taken over by another process.
STALE_AFTER = timedelta(seconds=60)
#: A batch that met a concurrent insert of the same bib is tried again this many times.
ATTEMPTS = 3


class TakenOver(Exception):
    """The job moved on without this runner (another process claimed it as stale)."""


def spool_dir(service: Service) -> Path:
    """Where uploads wait for their job: IMPORT_SPOOL_DIR, else under the state dir."""
    configured = service.settings.import_spool_dir
    folder = configured if configured is not None else service.settings.state_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def claim(service: Service, job_id: str) -> ImportJob | None:
    """Take the job if nobody runs it (queued, or its runner's heartbeat is stale)."""
    now = utcnow()
    async with service.uow() as uow:
        claimed = (await uow.session.execute(
            update(ImportJob)
            .where(col(ImportJob.job_id) == job_id,
                   or_(col(ImportJob.status) == "queued",
                       (col(ImportJob.status) == "running")
                       & (col(ImportJob.heartbeat_at) < now - STALE_AFTER)))
            .values(status="running", heartbeat_at=now,
                    started_at=func.coalesce(col(ImportJob.started_at), now))
            .returning(col(ImportJob.job_id))
        )).first()
        if claimed is None:
            return None
        return await uow.session.get(ImportJob, job_id)


async def resume_stale(service: Service) -> None:
    """Run jobs left queued or abandoned by a process that stopped (a `Job`, every few s)."""
    async with service.uow() as uow:
        ids = (await uow.session.exec(
            select(ImportJob.job_id).where(
                or_(col(ImportJob.status) == "queued",
                    (col(ImportJob.status) == "running")
                    & (col(ImportJob.heartbeat_at) < utcnow() - STALE_AFTER)))
            .order_by(col(ImportJob.created_at))
        )).all()
    for job_id in ids:
        await run(service, job_id)


async def run(service: Service, job_id: str) -> None:
    """Run the job to its end if this process can claim it."""
    job = await claim(service, job_id)
    if job is None:
        return
    path = Path(job.spool_path)
    log.info("import job started", extra={"job_id": job_id, "from_record": job.records_done})
    try:
        stream = await asyncio.to_thread(path.open, "rb")
        try:
            await _read_all(service, job, stream)
        finally:
            stream.close()
        await _finish(service, job_id, status="done", error=None)
        log.info("import job done", extra={"job_id": job_id})
    except asyncio.CancelledError:
        raise  # the service is stopping: the job is resumed later from its last batch
    except TakenOver:
        # This runner stalled past STALE_AFTER and another one has the job now: it goes
        # on from where the job is and needs the spooled file, so nothing is touched.
        log.warning("import job taken over by another runner", extra={"job_id": job_id})
        return
    except FileNotFoundError:
        await _finish(service, job_id, status="failed",
                      error=f"the uploaded file is not in this replica's spool folder "
                            f"({path.parent}): replicas must share IMPORT_SPOOL_DIR. "
                            "Upload the file again")
    except NotMarc as exc:
        await _finish(service, job_id, status="failed", error=f"file: {exc}")
    except Exception as exc:
        log.exception("import job failed", extra={"job_id": job_id})
        await _finish(service, job_id, status="failed",
                      error=f"{type(exc).__name__}: {exc}; the records before "
                            "records_done are in. Upload the file again to go on: "
                            "what is in already is matched, not doubled")
    await asyncio.to_thread(path.unlink, missing_ok=True)


async def _read_all(service: Service, job: ImportJob, stream: BinaryIO) -> None:
    marc_format: MarcFormat | None = (
        "unimarc" if job.marc_format == "unimarc"
        else "marc21" if job.marc_format == "marc21" else None)
    on_match: domain.OnMatch = (
        "keep" if job.on_match == "keep" else "merge" if job.on_match == "merge" else "overlay")
    if job.bytes_total >= READER_PROCESS_BYTES:
        await _import(service, job.job_id, _from_reader_process(job, marc_format), on_match)
        return
    reading = marc.batches(stream, marc_format, skip=job.records_done, size=IMPORT_BATCH)

    async def read() -> AsyncIterator[tuple[marc.Batch, int]]:
        while True:
            # Reading MARC is CPU work: off the event loop, so HTTP keeps answering.
            item = await asyncio.to_thread(next, reading, None)
            if item is None:
                return
            yield item

    await _import(service, job.job_id, read(), on_match)


async def _import(service: Service, job_id: str,
                  batches: AsyncIterator[tuple[marc.Batch, int]],
                  on_match: domain.OnMatch) -> None:
    """Plan each batch while the one before it is written: matching is CPU in this process,
    writing is mostly Postgres' work, and the two overlap.

    A batch is planned from the committed bibs plus what the batch still being written
    makes or changes (`ImportPlan.carried`); it is written only after that one committed.
    If that one had to be planned again (it met a concurrent writer), so is this one.
    """
    writing: asyncio.Task[bool] | None = None
    carried: list[handlers.BibState] = []
    try:
        async for batch, bytes_read in batches:
            plan = await _plan(service, batch, on_match, carried)
            if writing is not None:
                replanned = await writing
                writing = None
                if replanned:
                    plan = await _plan(service, batch, on_match, [])
            writing = asyncio.create_task(_write(service, job_id, plan, on_match, bytes_read))
            carried = plan.carried()
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:
            writing.cancel()
            with suppress(BaseException):
                await writing


async def _plan(service: Service, batch: Sequence[handlers.Record], on_match: domain.OnMatch,
                carried: list[handlers.BibState]) -> handlers.ImportPlan:
    async with service.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        rows = await handlers.read_matches(driver, batch)
    return await asyncio.to_thread(handlers.plan_import, batch, rows, on_match=on_match,
                                   carried=carried)


async def _write(service: Service, job_id: str, plan: handlers.ImportPlan,
                 on_match: domain.OnMatch, bytes_read: int) -> bool:
    """Commit a planned batch with its report lines and the job's counters; True if it had
    to be planned again first."""
    replanned = False
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with service.uow() as uow:
                job = (await uow.session.exec(
                    select(ImportJob).where(col(ImportJob.job_id) == job_id)
                    .with_for_update())).one()
                first = plan.records[0][0]
                if job.status != "running" or job.records_done != first:
                    raise TakenOver(job_id)  # another runner is ahead or has ended it
                result = await handlers.write_import(uow, plan, job_id)
                job.records_done = plan.records[-1][0] + 1
                job.bytes_done = min(bytes_read, job.bytes_total)
                job.created += result.created
                job.overlaid += result.overlaid
                job.merged += result.merged
                job.kept += result.kept
                job.rejected += result.rejected
                job.items_created += result.items_created
                job.heartbeat_at = utcnow()
            return replanned
        except Exception as exc:
            # A receipt or another import created or changed one of these bibs at the same
            # moment (unique violation, from SQLAlchemy or from the COPY on the raw
            # connection; or StaleMatch): the batch is planned again from what is committed.
            unique = isinstance(exc, IntegrityError) or getattr(exc, "sqlstate", "") == "23505"
            if not (unique or isinstance(exc, handlers.StaleMatch)) or attempt == ATTEMPTS:
                raise
            log.info("import batch met a concurrent writer; planning it again",
                     extra={"job_id": job_id, "attempt": attempt, "reason": str(exc)})
            plan = await _plan(service, plan.records, on_match, [])
            replanned = True
    raise AssertionError("unreachable")


async def _from_reader_process(job: ImportJob, marc_format: MarcFormat | None,
                               ) -> AsyncIterator[tuple[marc.Batch, int]]:
    """The file's batches read by a process of its own, at most two batches ahead."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue(maxsize=2)
    reader = context.Process(target=marc.read_into, daemon=True, name=f"import-{job.job_id}",
                             args=(queue, job.spool_path, marc_format, job.records_done,
                                   IMPORT_BATCH))
    reader.start()
    try:
        while True:
            try:
                kind, payload, done = await asyncio.to_thread(queue.get, True, 5.0)
            except Empty:
                if not reader.is_alive():
                    raise RuntimeError(f"the reader process ended ({reader.exitcode}) "
                                       "before the file did") from None
                continue
            if kind == "end":
                return
            if kind == "not_marc":
                raise NotMarc(payload)
            if kind == "error":
                raise RuntimeError(payload)
            yield payload, done
    finally:
        if reader.is_alive():
            reader.terminate()
        await asyncio.to_thread(reader.join, 5.0)


async def _finish(service: Service, job_id: str, *, status: str, error: str | None) -> None:
    async with service.uow() as uow:
        job = await uow.session.get(ImportJob, job_id)
        if job is None:
            return
        job.status, job.error, job.finished_at = status, error, utcnow()
        if status == "done":
            job.bytes_done = job.bytes_total
