"""`branchline marc import FILE`: a MARC file of any size into cataloging, with progress.

The file is streamed to cataloging's `POST /imports` (never read whole: the request body
is produced as the file is read), which answers at once with an import job; the job is
then followed to its end with a progress bar, and its rejected records are listed. An
ISO 2709 file larger than `--part-mb` (default 1 GiB, under the service's 2 GiB per
upload) goes as several jobs cut at record boundaries (each record says its own length);
record positions in the report are positions in the whole file. A file sent again is
matched, not doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from services.cataloging.marc import detect_format, split_records
from shared.service.auth import issue_token

#: Bytes of records per upload: each becomes one import job.
DEFAULT_PART_BYTES = 1024 ** 3
#: How often a running job is asked how far it got.
POLL_S = 0.5
OUTCOMES = ("created", "overlaid", "merged", "kept", "rejected")


@dataclass
class Totals:
    """What the jobs of one file did, summed; `rejected_records`: (position, reason)."""

    records: int = 0
    created: int = 0
    overlaid: int = 0
    merged: int = 0
    kept: int = 0
    rejected: int = 0
    items_created: int = 0
    jobs: list[str] = field(default_factory=list)
    rejected_records: list[tuple[int, str]] = field(default_factory=list)

    def add(self, job: dict[str, Any]) -> None:
        self.records += job["records_done"]
        for name in (*OUTCOMES, "items_created"):
            setattr(self, name, getattr(self, name) + job[name])
        self.jobs.append(job["job_id"])


Progress = Callable[[str, int, int, "Totals", dict[str, Any] | None], None]


def parts(stream: BinaryIO, part_bytes: int) -> Iterator[Iterator[bytes]]:
    """The file as uploads: ISO 2709 cut at record boundaries every `part_bytes`;
    anything else (MARCXML) whole, since only the service reads it record by record.
    Each part must be read to its end before the next is asked for."""
    head = stream.read(5)
    stream.seek(-len(head), 1)
    if not head.isdigit():
        yield iter(lambda: stream.read(1024 * 1024), b"")
        return
    records = split_records(stream)
    carry: list[bytes] = []  # the record that did not fit into the part before

    def one_part() -> Iterator[bytes]:
        size = 0
        while True:
            record = carry.pop() if carry else next(records, None)
            if record is None:
                return
            if size and size + len(record) > part_bytes:
                carry.append(record)
                return
            size += len(record)
            yield record

    while True:
        if not carry:
            first = next(records, None)
            if first is None:
                return
            carry.append(first)
        yield one_part()


async def _multipart(chunks: Iterator[bytes], filename: str, boundary: str,
                     sent: list[int]) -> AsyncIterator[bytes]:
    """A multipart/form-data body with one file field, produced as `chunks` are read."""
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"{filename}\"\r\nContent-Type: application/marc\r\n\r\n").encode()
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:  # records, joined into writes of about 1 MiB
        pending.append(chunk)
        size += len(chunk)
        if size >= 1024 * 1024:
            sent[0] += size
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        sent[0] += size
        yield b"".join(pending)
    yield f"\r\n--{boundary}--\r\n".encode()


async def import_file(stream: BinaryIO, total_bytes: int, client: httpx.AsyncClient, *,
                      filename: str, params: dict[str, str], headers: dict[str, str],
                      part_bytes: int = DEFAULT_PART_BYTES,
                      progress: Progress | None = None) -> Totals:
    """Upload the stream as one or more import jobs and follow each to its end."""
    totals = Totals()
    uploaded = 0
    head = stream.read(100_000)
    stream.seek(-len(head), 1)
    if "format" not in params and head[:5].isdigit():
        # Told once, from the file's first record: a later part may start with a broken one.
        params = {**params, "format": detect_format(head)}
    for part in parts(stream, part_bytes):
        boundary = uuid.uuid4().hex
        sent = [0]
        r = await client.post(
            "/imports", params=params,
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            content=_multipart(part, filename, boundary, sent))
        if r.status_code != 202:
            raise SystemExit(f"\nerror: cataloging refused the upload ({r.status_code}): "
                             f"{r.text[:500]}")
        job: dict[str, Any] = r.json()
        first = totals.records
        while job["status"] in ("queued", "running"):
            if progress is not None:
                progress("importing", uploaded + job["bytes_done"], total_bytes, totals, job)
            await asyncio.sleep(POLL_S)
            job = (await client.get(f"/imports/{job['job_id']}", headers=headers)).json()
        if job["status"] == "failed":
            raise SystemExit(f"\nerror: import job {job['job_id']} failed: {job['error']}")
        after = -1
        while after is not None:
            page = (await client.get(f"/imports/{job['job_id']}/records", headers=headers,
                                     params={"outcome": "rejected", "after": after,
                                             "limit": 1000})).json()
            totals.rejected_records += [(first + r["position"], r["reason"])
                                        for r in page["records"]]
            after = page["next_after"]
        totals.add(job)
        uploaded += sent[0]
        if progress is not None:
            progress("importing", uploaded, total_bytes, totals, None)
    return totals


def _bar(started: float) -> Progress:
    def show(phase: str, done: int, total: int, totals: Totals,
             job: dict[str, Any] | None) -> None:
        share = done / total if total else 1.0
        filled = int(share * 30)
        records = totals.records + (job["records_done"] if job else 0)
        rate = records / max(time.perf_counter() - started, 1e-9)
        sys.stderr.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  "
                         f"{records:,} records  {rate:,.0f}/s ")
        sys.stderr.flush()
    return show


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def main(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"error: no such file: {path}")
    if not 0 < args.part_mb <= 2048:
        raise SystemExit("error: --part-mb must be more than 0 and at most 2048 (cataloging "
                         "takes 2 GiB an upload)")
    params = {"on_match": args.on_match}
    if args.format:
        params["format"] = args.format
    headers = {"Authorization": "Bearer " + issue_token("cataloger")}
    started = time.perf_counter()

    async def run(stream: BinaryIO, size: int) -> Totals:
        async with httpx.AsyncClient(base_url=args.url.rstrip("/"), timeout=600) as client:
            return await import_file(stream, size, client, filename=path.name, params=params,
                                     headers=headers, part_bytes=int(args.part_mb * 1024 ** 2),
                                     progress=_bar(started))

    try:
        with path.open("rb") as stream:
            totals = asyncio.run(run(stream, path.stat().st_size))
    except httpx.TransportError as exc:
        raise SystemExit(f"error: cataloging is not reachable at {args.url} ({exc}); "
                         "is `branchline up` running?") from exc
    seconds = time.perf_counter() - started
    print(f"\n{_count(totals.records, 'record')} in {seconds:.1f} s "
          f"({totals.records / max(seconds, 1e-9):,.0f}/s): "
          f"{_count(totals.created, 'new bib')}, {totals.overlaid:,} overlaid, "
          f"{totals.merged:,} merged, {totals.kept:,} kept, {totals.rejected:,} rejected; "
          f"{_count(totals.items_created, 'item')} from holdings")
    for index, reason in totals.rejected_records[:20]:
        print(f"  record {index}: {reason}")
    if len(totals.rejected_records) > 20:
        print(f"  ... and {len(totals.rejected_records) - 20:,} more: "
              f"GET /imports/{{job}}/records?outcome=rejected for jobs {', '.join(totals.jobs)}")
    return 0


def add_arguments(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument("file", help="MARC file: ISO 2709 or MARCXML, MARC 21 or "
                                     "UNIMARC/CNMARC")
    parser.add_argument("--url", default=default_url, help="cataloging's base URL")
    parser.add_argument("--format", choices=["marc21", "unimarc"], default=None,
                        help="default: seen from the first record")
    parser.add_argument("--on-match", choices=["overlay", "keep", "merge"], default="overlay",
                        help="a record matching a bib (ISBN, else title + author + year): "
                             "replace its description, keep the bib, or fill in what it lacks")
    parser.add_argument("--part-mb", type=float, default=DEFAULT_PART_BYTES / 1024 ** 2,
                        help="MiB of records per upload (one import job each; at most 2048)")
