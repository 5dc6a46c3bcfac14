"""`branchline marc import FILE`: a MARC file of any size into cataloging, with progress.

The file is read as a stream of ISO 2709 records (each says its own length in the first
five bytes of its leader), never whole, and sent in uploads of at most `--chunk-mb`
(default 16 MiB, under cataloging's 20 MiB per request). Each upload is committed by the
service before the next is sent, so memory stays flat on both sides whatever the file's
size, and an interrupted import sent again matches what is already in instead of doubling
it. Record positions in the report are positions in the whole file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from services.cataloging.marc import split_records as iter_records
from shared.service.auth import issue_token

#: Each upload's records, at most this many bytes (the service takes 20 MiB a request).
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024


def uploads(records: Iterator[bytes], max_bytes: int) -> Iterator[tuple[int, list[bytes]]]:
    """(position of the first record, records) per upload, each within `max_bytes`."""
    batch: list[bytes] = []
    size = first = position = 0
    for record in records:
        if batch and size + len(record) > max_bytes:
            yield first, batch
            batch, size, first = [], 0, position
        batch.append(record)
        size += len(record)
        position += 1
    if batch:
        yield first, batch


@dataclass
class Totals:
    imported: int = 0
    updated: int = 0
    kept: int = 0
    records: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


Post = Callable[[bytes], Awaitable[dict[str, Any]]]


async def import_file(stream: BinaryIO, total_bytes: int, post: Post, *,
                      max_bytes: int = DEFAULT_CHUNK_BYTES,
                      progress: Callable[[Totals, int, int], None] | None = None) -> Totals:
    """Send the stream's records in uploads; the service's answers summed up."""
    done_bytes = 0
    totals = Totals()
    for first, batch in uploads(iter_records(stream), max_bytes):
        report = await post(b"".join(batch))
        totals.imported += report["imported"]
        totals.updated += report["updated"]
        totals.kept += report.get("kept", 0)
        totals.records += len(batch)
        totals.skipped += [(first + s["index"], s["reason"]) for s in report["skipped"]]
        done_bytes += sum(len(r) for r in batch)
        if progress is not None:
            progress(totals, done_bytes, total_bytes)
    return totals


def _bar(totals: Totals, done: int, total: int, started: float) -> None:
    share = done / total if total else 1.0
    filled = int(share * 30)
    rate = totals.records / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  "
                     f"{totals.records:,} records  {rate:,.0f}/s ")
    sys.stderr.flush()


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def main(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"error: no such file: {path}")
    if not 0 < args.chunk_mb <= 20:
        raise SystemExit("error: --chunk-mb must be more than 0 and at most 20 (cataloging "
                         "takes 20 MiB a request)")
    url = args.url.rstrip("/") + "/imports"
    params = {"on_match": args.on_match}
    if args.format:
        params["format"] = args.format
    headers = {"Authorization": "Bearer " + issue_token("cataloger")}
    started = time.perf_counter()

    async def run(stream: BinaryIO, size: int) -> Totals:
        async with httpx.AsyncClient(timeout=600) as client:
            async def post(data: bytes) -> dict[str, Any]:
                r = await client.post(url, params=params, headers=headers,
                                      files={"file": (path.name, data)})
                if r.status_code != 201:
                    raise SystemExit(f"\nerror: cataloging refused an upload ({r.status_code}):"
                                     f" {r.text[:500]}")
                answer: dict[str, Any] = r.json()
                return answer
            return await import_file(stream, size, post,
                                     max_bytes=int(args.chunk_mb * 1024 * 1024),
                                     progress=lambda t, d, n: _bar(t, d, n, started))

    try:
        with path.open("rb") as stream:
            totals = asyncio.run(run(stream, path.stat().st_size))
    except httpx.TransportError as exc:
        raise SystemExit(f"error: cataloging is not reachable at {args.url} ({exc}); "
                         "is `branchline up` running?") from exc
    seconds = time.perf_counter() - started
    print(f"\n{_count(totals.records, 'record')} in {seconds:.1f} s: "
          f"{_count(totals.imported, 'new bib')}, {totals.updated:,} overlaid, "
          f"{totals.kept:,} kept, {len(totals.skipped):,} rejected")
    for index, reason in totals.skipped[:20]:
        print(f"  record {index}: {reason}")
    if len(totals.skipped) > 20:
        print(f"  ... and {len(totals.skipped) - 20:,} more")
    return 0


def add_arguments(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument("file", help="ISO 2709 file: MARC 21 or UNIMARC/CNMARC")
    parser.add_argument("--url", default=default_url, help="cataloging's base URL")
    parser.add_argument("--format", choices=["marc21", "unimarc"], default=None,
                        help="default: seen from the first record")
    parser.add_argument("--on-match", choices=["overlay", "keep"], default="overlay",
                        help="a record whose ISBN matches a bib: replace it or keep the bib")
    parser.add_argument("--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 1024 / 1024,
                        help="MiB of records per upload (at most 20)")
