"""Cataloging against the real broker and Postgres: received copies, search, MARC imports."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymarc import Field, MARCWriter, Record, Subfield
from sqlalchemy import String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from devtools import marcimport
from services.cataloging import domain, handlers, imports
from services.cataloging.spec import SPEC
from tests.support import (
    Infra,
    ServiceClient,
    cloud_event,
    events_of,
    eventually,
    new_env,
    produce,
    read_topic,
    running_service,
    token,
)

pytestmark = pytest.mark.integration

ACQ = "branchline/acquisition"


def copies_received(order_id: str, line_id: str, isbn: str, copies: list[tuple[str, str]],
                    title: str = "Fortress Besieged", author: str | None = "Qian, Zhongshu",
                    event_id: str | None = None) -> dict:
    return cloud_event(
        "acquisition.copies_received", order_id,
        {"order_id": order_id, "line_id": line_id, "isbn": isbn, "title": title,
         "author": author, "publisher": "People's Literature", "year": 1947,
         "copies": [{"copy_id": c, "owning_branch": b} for c, b in copies],
         "received_at": datetime.now(UTC).isoformat()},
        source=ACQ, event_id=event_id,
    )


def site_upserted(code: str, name: str) -> dict:
    return cloud_event(
        "network.site_upserted", code,
        {"code": code, "name": name, "kind": "town", "lat": 30.7, "lon": 120.7,
         "hub": "JX-CENTRAL", "opening_hours": {"mon": [["09:00", "17:00"]]},
         "courier_days": ["mon"]},
        source="branchline/logistics",
    )


def status_changed(barcode: str, bib_id: str, status: str, site: str, owner: str,
                   at: datetime | None = None) -> dict:
    return cloud_event(
        "circulation.item_status_changed", barcode,
        {"barcode": barcode, "bib_id": bib_id, "status": status, "site": site,
         "owning_branch": owner},
        source="branchline/circulation", time=at,
    )


async def all_handled(client: ServiceClient, event_ids: list[str]) -> bool:
    """True once the service's inbox holds every one of these events."""
    async with client.service.engine.connect() as connection:
        result = await connection.execute(
            text("SELECT count(*) FROM cataloging.inbox WHERE id = ANY(:ids)")
            .bindparams(bindparam("ids", type_=ARRAY(String))),
            {"ids": event_ids},
        )
        return result.scalar_one() == len(event_ids)


def marc_record(isbn: str | None, title: str, author: str, publisher: str, date: str,
                ) -> Record:
    record = Record()
    record.add_field(Field(tag="008", data="980101s1998    cc            000 1 eng d"))
    record.add_field(Field(tag="050", indicators=[" ", "0"],
                           subfields=[Subfield("a", "QA47"), Subfield("b", ".S6")]))
    record.add_field(Field(tag="650", indicators=[" ", "0"],
                           subfields=[Subfield("a", "Mathematics"), Subfield("v", "Tables.")]))
    if isbn:
        record.add_field(Field(tag="020", indicators=[" ", " "],
                               subfields=[Subfield("a", isbn)]))
    record.add_field(Field(tag="100", indicators=["1", " "], subfields=[Subfield("a", author)]))
    record.add_field(Field(tag="245", indicators=["1", "0"],
                           subfields=[Subfield("a", title), Subfield("c", author)]))
    record.add_field(Field(tag="264", indicators=[" ", "1"],
                           subfields=[Subfield("a", "Beijing :"), Subfield("b", publisher),
                                      Subfield("c", date)]))
    return record


def marc_file(*records: Record) -> bytes:
    buffer = io.BytesIO()
    writer = MARCWriter(buffer)
    for record in records:
        writer.write(record)
    return buffer.getvalue()


async def test_received_copies_become_items_once_and_are_found_by_search(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "network.sites", [site_upserted("JX-HN-01", "Haining Library")])
        received = copies_received("O-1", "L-1", "978-7-02-000220-7",
                                   [("C-1", "JX-HN-01"), ("C-2", "JX-HN-01"),
                                    ("C-3", "JX-HY-02")])
        await produce(settings, "acquisition.orders", [received])

        items = events_of(await read_topic(settings, "cataloging.items", at_least=3),
                          "cataloging.item_cataloged")
        assert len(items) == 3
        by_copy = {e["data"]["copy_id"]: e["data"] for e in items}
        assert {c: d["owning_branch"] for c, d in by_copy.items()} == {
            "C-1": "JX-HN-01", "C-2": "JX-HN-01", "C-3": "JX-HY-02"}
        barcodes = [d["barcode"] for d in by_copy.values()]
        assert len(set(barcodes)) == 3
        assert all(domain.is_valid_barcode(b) for b in barcodes)
        assert all(e["subject"] == e["data"]["barcode"] for e in items)
        assert all(e["causationid"] == received["id"] for e in items)
        assert {d["site"] for d in by_copy.values()} == {"JX-CENTRAL"}
        assert {d["isbn"] for d in by_copy.values()} == {"9787020002207"}
        assert {d["call_number"] for d in by_copy.values()} == {"TBC/Q1947"}
        bib_id = items[0]["data"]["bib_id"]
        assert {d["bib_id"] for d in by_copy.values()} == {bib_id}

        bibs = events_of(await read_topic(settings, "cataloging.bibs", at_least=1),
                         "cataloging.bib_upserted")
        assert [b["data"]["bib_id"] for b in bibs] == [bib_id]
        assert bibs[0]["data"]["isbns"] == ["9787020002207"]
        assert bibs[0]["subject"] == bib_id

        # the same event again, and the same copies under a new event id: no new items
        again = copies_received("O-1", "L-1", "978-7-02-000220-7",
                                [("C-1", "JX-HN-01"), ("C-3", "JX-HY-02")])
        await produce(settings, "acquisition.orders", [received, again])
        # a later receipt of the same title, its ISBN given in ISBN-10 form
        later = copies_received("O-2", "L-9", "7-02-000220-x", [("C-4", "JX-HY-02")])
        await produce(settings, "acquisition.orders", [later])

        items = events_of(await read_topic(settings, "cataloging.items", at_least=4, settle=3.0),
                          "cataloging.item_cataloged")
        assert sorted(e["data"]["copy_id"] for e in items) == ["C-1", "C-2", "C-3", "C-4"]
        fourth = next(e["data"] for e in items if e["data"]["copy_id"] == "C-4")
        assert fourth["bib_id"] == bib_id
        bibs = events_of(await read_topic(settings, "cataloging.bibs", at_least=1, settle=1.0),
                         "cataloging.bib_upserted")
        assert len(bibs) == 1

        r = await client.get(f"/items/{by_copy['C-1']['barcode']}", headers=token("desk",
                                                                                  site="JX-HN-01"))
        assert r.status_code == 200, r.text
        item = r.json()
        assert item["copy_id"] == "C-1" and item["status"] == "in_processing"
        assert item["site"] == "JX-CENTRAL" and item["owning_branch"] == "JX-HN-01"
        assert item["bib"]["bib_id"] == bib_id and item["bib"]["title"] == "Fortress Besieged"

        # circulation tells where the copies are; an older, late fact does not win
        now = datetime.now(UTC)
        changes = [
            status_changed(by_copy["C-1"]["barcode"], bib_id, "available", "JX-HN-01",
                           "JX-HN-01", now),
            status_changed(by_copy["C-1"]["barcode"], bib_id, "in_transit", "JX-CENTRAL",
                           "JX-HN-01", now - timedelta(minutes=5)),
            status_changed(by_copy["C-3"]["barcode"], bib_id, "on_loan", "JX-HY-02",
                           "JX-HY-02", now),
            status_changed("UNKNOWN-1", bib_id, "available", "JX-HY-02", "JX-HY-02", now),
        ]
        await produce(settings, "circulation.loans", changes)
        await eventually(lambda: all_handled(client, [e["id"] for e in changes]),
                         what="circulation's status changes handled")
        statuses = {}
        for copy in ("C-1", "C-3"):
            body = (await client.get(f"/items/{by_copy[copy]['barcode']}",
                                     headers=token("admin"))).json()
            statuses[copy] = (body["status"], body["site"])
        assert statuses == {"C-1": ("available", "JX-HN-01"), "C-3": ("on_loan", "JX-HY-02")}
        assert (await client.get("/items/UNKNOWN-1", headers=token("admin"))).status_code == 404

        headers = token("branch_system", site="JX-HY-02")
        for q in ("fortress", "QIAN", "7-02-000220-X", "9787020002207"):
            r = await client.get("/search", params={"q": q}, headers=headers)
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert [b["bib_id"] for b in results] == [bib_id], q
        hit = results[0]
        assert hit["total_items"] == 4 and hit["total_available"] == 1
        assert hit["holdings"] == [
            {"branch": "JX-HN-01", "name": "Haining Library", "holdings": 2, "available": 1},
            {"branch": "JX-HY-02", "name": None, "holdings": 2, "available": 0},
        ]
        r = await client.get("/search", params={"q": "no such title"}, headers=headers)
        assert r.status_code == 200 and r.json()["results"] == []

        r = await client.get(f"/bibs/{bib_id}", headers=headers)
        assert r.status_code == 200 and r.json()["isbn13"] == "9787020002207"
        assert r.json()["isbn_valid"] is True and r.json()["total_items"] == 4

        assert (await client.get("/items/JX0000000000", headers=headers)).status_code == 404
        assert (await client.get("/bibs/nope", headers=headers)).status_code == 404
        assert (await client.get("/search", params={"q": "x"})).status_code == 401
        r = await client.get("/search", params={"q": "x", "limit": 0}, headers=headers)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_one_batch_with_two_receipts_of_a_new_title_makes_one_bib(infra: Infra) -> None:
    settings = await new_env(infra, processing_site="JX-PROC")
    async with running_service(SPEC, settings) as client:
        first = copies_received("O-7", "L-1", "0-306-40615-2", [("D-1", "JX-HN-01")],
                                title="Mathematical Tables", author="Smith")
        second = copies_received("O-7", "L-2", "978-0-306-40615-7", [("D-2", "JX-HY-02")],
                                 title="Mathematical Tables", author="Smith")
        bad = copies_received("O-7", "L-3", "978-0-306-40615-8", [("D-3", "JX-HY-02")],
                              title="Misprinted", author="Jones")
        await produce(settings, "acquisition.orders", [first, second, bad])

        items = events_of(await read_topic(settings, "cataloging.items", at_least=3),
                          "cataloging.item_cataloged")
        by_copy = {e["data"]["copy_id"]: e["data"] for e in items}
        assert set(by_copy) == {"D-1", "D-2", "D-3"}
        assert by_copy["D-1"]["bib_id"] == by_copy["D-2"]["bib_id"] != by_copy["D-3"]["bib_id"]
        assert {d["site"] for d in by_copy.values()} == {"JX-PROC"}
        # serials 1-3 of a fresh sequence: no batch was rolled back and retried record by
        # record (a retry draws new serials), so the second receipt found the bib the first
        # one created in the same transaction instead of colliding with it
        assert sorted(d["barcode"] for d in by_copy.values()) == [
            domain.format_barcode(n) for n in (1, 2, 3)]
        bibs = events_of(await read_topic(settings, "cataloging.bibs", at_least=2, settle=1.0),
                         "cataloging.bib_upserted")
        assert sorted(b["data"]["isbns"][0] for b in bibs) == ["9780306406157", "9780306406158"]

        # the misprinted ISBN is kept, marked invalid, and found as given
        r = await client.get("/search", params={"q": "978-0-306-40615-8"},
                             headers=token("cataloger"))
        [hit] = r.json()["results"]
        assert hit["isbn13"] == "9780306406158" and hit["isbn_valid"] is False
        assert hit["title"] == "Misprinted"


async def run_import(client: ServiceClient, data: bytes, filename: str = "f.mrc",
                     **params: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Upload a MARC file, wait for its import job to end; the job and its report."""
    headers = token("cataloger")
    r = await client.post("/imports", params=params, files={"file": (filename, data)},
                          headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    async def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = (await client.get(f"/imports/{job_id}", headers=headers)).json()
        return job if job["status"] in ("done", "failed") else None

    job = await eventually(ended, timeout=60)
    lines = (await client.get(f"/imports/{job_id}/records", params={"limit": 1000},
                              headers=headers)).json()["records"]
    return job, lines


def counts(job: dict[str, Any]) -> tuple[int, ...]:
    """created, overlaid, merged, kept, rejected."""
    return tuple(job[k] for k in ("created", "overlaid", "merged", "kept", "rejected"))


async def test_marc_import_creates_and_updates_bibs(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "acquisition.orders", [
            copies_received("O-3", "L-1", "0-306-40615-2", [("E-1", "JX-HN-01")],
                            title="Provisional title from the order", author=None)])
        existing = events_of(await read_topic(settings, "cataloging.items", at_least=1),
                             "cataloging.item_cataloged")[0]["data"]

        upload = marc_file(
            marc_record("0306406152 (pbk.)", "Mathematical tables /", "Smith, John A.",
                        "Academic Press,", "c1998."),
            marc_record(None, "No number here /", "Anon,", "Nobody,", "2001."),
            marc_record("7-02-000220-X", "Wei cheng /", "Qian, Zhongshu,",
                        "Ren min wen xue chu ban she,", "[1947?]"),
        )
        headers = token("cataloger")
        job, lines = await run_import(client, upload, "batch.mrc")
        assert job["status"] == "done" and job["percent"] == 100.0
        assert counts(job) == (2, 1, 0, 0, 0) and job["records_done"] == 3
        assert [(x["position"], x["outcome"], x["matched_by"]) for x in lines] == [
            (0, "overlaid", "isbn"), (1, "created", None), (2, "created", None)]
        assert lines[0]["bib_id"] == existing["bib_id"]

        r = await client.get(f"/bibs/{existing['bib_id']}", headers=headers)
        bib = r.json()
        assert (bib["title"], bib["author"], bib["publisher"], bib["year"]) == (
            "Mathematical tables", "Smith, John A.", "Academic Press", 1998)
        assert (bib["language"], bib["classification"], bib["classification_scheme"],
                bib["subjects"]) == ("eng", "QA47 .S6", "lcc", ["Mathematics"])
        assert bib["total_items"] == 1

        r = await client.get("/search", params={"q": "wei cheng"}, headers=headers)
        [hit] = r.json()["results"]
        assert hit["isbn13"] == "9787020002207" and hit["author"] == "Qian, Zhongshu"
        assert hit["year"] == 1947 and hit["total_items"] == 0

        bibs = events_of(await read_topic(settings, "cataloging.bibs", at_least=4),
                         "cataloging.bib_upserted")
        assert len(bibs) == 4  # created by the receipt, then updated, and the two new ones
        assert {b["data"]["title"] for b in bibs} >= {"Mathematical tables", "Wei cheng",
                                                     "No number here"}

        # importing the same file again creates nothing: the record without an ISBN
        # matches by title + author + year
        job, lines = await run_import(client, upload)
        assert counts(job) == (0, 3, 0, 0, 0)
        assert [x["matched_by"] for x in lines] == ["isbn", "title", "isbn"]


async def test_marc_import_refuses_what_is_not_marc(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        headers = token("cataloger")
        for content in (b"title,author\nFortress Besieged,Qian Zhongshu\n", b"%PDF-1.7\n" * 40,
                        b""):
            r = await client.post("/imports", files={"file": ("list.csv", content, "text/csv")},
                                  headers=headers)
            assert r.status_code == 422, r.text
            [error] = r.json()["detail"]
            assert error["loc"] == ["body", "file"] and error["type"] == "not_marc"

        r = await client.post("/imports", headers=headers)
        assert r.status_code == 422
        assert ["body", "file"] in [e["loc"] for e in r.json()["detail"]]

        upload = marc_file(marc_record("9787020002207", "Wei cheng /", "Qian", "P", "1947"))
        r = await client.post("/imports", files={"file": ("a.mrc", upload)},
                              headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 403
        r = await client.get("/imports/no-such-job", headers=headers)
        assert r.status_code == 404
        r = await client.get("/search", params={"q": "wei"}, headers=headers)
        assert r.json()["results"] == []


def cnmarc_record(isbn: str, title: str, author: str, publisher: str, year: str) -> Record:
    """A CNMARC (UNIMARC) record as the national agency writes one, in UTF-8."""
    record = Record(force_utf8=True)
    record.add_field(Field(tag="010", indicators=[" ", " "],
                           subfields=[Subfield("a", isbn), Subfield("d", "CNY39.00")]))
    record.add_field(Field(tag="200", indicators=["1", " "],
                           subfields=[Subfield("a", title), Subfield("f", author + "著")]))
    record.add_field(Field(tag="210", indicators=[" ", " "],
                           subfields=[Subfield("a", "北京"), Subfield("c", publisher),
                                      Subfield("d", year)]))
    record.add_field(Field(tag="101", indicators=["0", " "], subfields=[Subfield("a", "chi")]))
    record.add_field(Field(tag="606", indicators=["0", " "],
                           subfields=[Subfield("a", "长篇小说"), Subfield("y", "中国")]))
    record.add_field(Field(tag="690", indicators=[" ", " "],
                           subfields=[Subfield("a", "I247.5"), Subfield("v", "5")]))
    record.add_field(Field(tag="701", indicators=[" ", "0"],
                           subfields=[Subfield("a", author), Subfield("4", "著")]))
    return record


async def test_a_cnmarc_file_imports_chinese_books_and_rejects_a_badly_encoded_one(
    infra: Infra,
) -> None:
    settings = await new_env(infra)
    books = [("978-7-02-002475-9", "围城", "钱锺书", "人民文学出版社", "1991"),
             ("978-7-5063-6543-7", "活着", "余华", "作家出版社", "2012.8"),
             ("978-7-5302-1200-4", "平凡的世界", "路遥", "北京十月文艺出版社", "2012")]
    upload = marc_file(*(cnmarc_record(*book) for book in books))
    bad = bytearray(upload)
    at = bad.index("活着".encode())
    bad[at:at + 3] = b"\xff\xfe\xfd"  # the second record's title is not UTF-8 any more
    headers = token("cataloger")
    async with running_service(SPEC, settings) as client:
        job, lines = await run_import(client, bytes(bad), "cn.mrc")
        assert counts(job) == (2, 0, 0, 0, 1)
        [skipped] = [x for x in lines if x["outcome"] == "rejected"]
        assert skipped["position"] == 1 and skipped["reason"].startswith("unreadable record")

        r = await client.get("/search", params={"q": "围城"}, headers=headers)
        [hit] = r.json()["results"]
        assert (hit["isbn13"], hit["title"], hit["author"], hit["publisher"], hit["year"]) == (
            "9787020024759", "围城", "钱锺书", "人民文学出版社", 1991)
        assert (hit["language"], hit["classification"], hit["classification_scheme"],
                hit["subjects"], hit["has_marc"]) == ("chi", "I247.5", "clc", ["长篇小说"], True)
        r = await client.get("/search", params={"q": "世界"}, headers=headers)
        assert [h["title"] for h in r.json()["results"]] == ["平凡的世界"]
        for by_class_or_subject in ("I247", "长篇小说"):
            r = await client.get("/search", params={"q": by_class_or_subject}, headers=headers)
            assert sorted(h["title"] for h in r.json()["results"]) == ["围城", "平凡的世界"]
        bibs = events_of(await read_topic(settings, "cataloging.bibs", at_least=2),
                         "cataloging.bib_upserted")
        assert {(b["data"]["title"], b["data"]["classification"], tuple(b["data"]["subjects"]))
                for b in bibs} == {("围城", "I247.5", ("长篇小说",)),
                                   ("平凡的世界", "I247.5", ("长篇小说",))}

        # copies of a classified title are shelved under its class
        await produce(settings, "acquisition.orders", [
            copies_received("O-CN", "L-1", "9787020024759", [("CN-1", "JX-HN-01")],
                            title="Wei cheng (brief, from the order)", author=None)])
        [item] = events_of(await read_topic(settings, "cataloging.items", at_least=1),
                           "cataloging.item_cataloged")
        # 中图法 class + 种次号: the first title the network shelves in I247.5
        assert (item["data"]["title"], item["data"]["call_number"]) == ("围城", "I247.5/1")

        # told the format, the clean file reads the same; told wrongly, nothing imports
        job, _ = await run_import(client, upload, format="unimarc")
        assert counts(job) == (1, 2, 0, 0, 0)
        job, lines = await run_import(client, upload, format="marc21")
        assert counts(job) == (0, 0, 0, 0, 3)
        assert {x["reason"] for x in lines} == {"no title in 245$a"}
        r = await client.post("/imports", params={"format": "cnmarc2"},
                              files={"file": ("cn.mrc", upload)}, headers=headers)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "format"]


async def test_an_import_goes_in_batches_and_can_keep_or_merge_what_it_matches(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imports, "IMPORT_BATCH", 2)
    monkeypatch.setattr(imports, "READER_PROCESS_BYTES", 0)  # read by a process of its own
    settings = await new_env(infra)
    records = [marc_record(isbn, f"Title {n} /", "Author,", "Press,", "2001.")
               for n, isbn in enumerate(["9787020002207", "0306406152", None,
                                         "9787506365437", "9787530212004"])]
    async with running_service(SPEC, settings) as client:
        job, lines = await run_import(client, marc_file(*records))
        assert counts(job) == (5, 0, 0, 0, 0) and job["records_done"] == 5
        assert [x["position"] for x in lines] == [0, 1, 2, 3, 4]

        changed = [marc_record("9787020002207", "A new title /", "Author,", "Press,", "2001."),
                   marc_record("9787544253994", "A new book /", "Author,", "Press,", "2002.")]
        job, _ = await run_import(client, marc_file(*changed), on_match="keep")
        assert counts(job) == (1, 0, 0, 1, 0)
        r = await client.get("/search", params={"q": "9787020002207"}, headers=token("cataloger"))
        assert r.json()["results"][0]["title"] == "Title 0"  # kept as it was
        job, _ = await run_import(client, marc_file(*changed), on_match="overlay")
        assert counts(job) == (0, 2, 0, 0, 0)
        r = await client.get("/search", params={"q": "9787020002207"}, headers=token("cataloger"))
        assert r.json()["results"][0]["title"] == "A new title"

        # merge keeps what the bib has and fills in what it lacks
        fuller = marc_record("9787020002207", "Yet another title /", "Someone else,", "P,",
                             "1999.")
        fuller.add_field(Field(tag="650", indicators=[" ", "0"],
                               subfields=[Subfield("a", "Chinese fiction")]))
        job, _ = await run_import(client, marc_file(fuller), on_match="merge")
        assert counts(job) == (0, 0, 1, 0, 0)
        r = await client.get("/search", params={"q": "9787020002207"}, headers=token("cataloger"))
        [bib] = r.json()["results"]
        assert (bib["title"], bib["author"]) == ("A new title", "Author")
        assert bib["subjects"] == ["Mathematics", "Chinese fiction"]
        r = await client.post("/imports", params={"on_match": "replace"},
                              files={"file": ("b.mrc", marc_file(*changed))},
                              headers=token("cataloger"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "on_match"]


async def test_each_batch_matches_what_the_batch_before_it_made_while_that_one_is_written(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One record per batch: every batch is planned while the one before it may still be
    uncommitted, and must still meet the bibs that one made or changed (by ISBN and by
    title + author + year), in file order: nothing doubled, the last overlay wins."""
    monkeypatch.setattr(imports, "IMPORT_BATCH", 1)
    settings = await new_env(infra)
    records = [marc_record("9787020002207", "First title /", "Author,", "Press,", "2001."),
               marc_record("9787020002207", "Second title /", "Author,", "Press,", "2001."),
               marc_record(None, "No number /", "Anon,", "Nobody,", "1999."),
               marc_record(None, "No number /", "Anon,", "Nobody,", "1999."),
               marc_record("9787020002207", "Third title /", "Author,", "Press,", "2001."),
               marc_record(None, "Third title /", "Author,", "Press,", "2001.")]
    async with running_service(SPEC, settings) as client:
        job, lines = await run_import(client, marc_file(*records))
        assert job["status"] == "done"
        assert [(x["outcome"], x["matched_by"]) for x in lines] == [
            ("created", None), ("overlaid", "isbn"), ("created", None),
            ("overlaid", "title"), ("overlaid", "isbn"), ("overlaid", "title")]
        assert len({x["bib_id"] for x in lines}) == 2
        async with client.service.engine.connect() as c:
            titles = (await c.execute(text(
                "SELECT title FROM cataloging.bib ORDER BY title"))).scalars().all()
        assert titles == ["No number", "Third title"]


async def test_a_bib_changed_after_its_batch_was_planned_is_not_overwritten(
    infra: Infra,
) -> None:
    """Planning reads without locks: a bib another writer changes between the plan and the
    write is left as that writer made it (StaleMatch); the batch planned again from what
    is committed then overlays it knowingly."""
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await run_import(client, marc_file(
            marc_record("9787020002207", "Old title /", "Author,", "Press,", "2001.")))
        service = client.service
        batch = [(0, domain.prepare(domain.BibData(
            isbn="9787020002207", title="Imported title", author="Author", year=2001)))]
        plan = await imports._plan(service, batch, "overlay", [])
        async with service.engine.begin() as c:  # a cataloger's edit, committed meanwhile
            await c.execute(text("UPDATE cataloging.bib SET publisher = 'Edited', "
                                 "title = 'Edited title', updated_at = now()"))
        with pytest.raises(handlers.StaleMatch):
            async with service.uow() as uow:
                await handlers.write_import(uow, plan)
        async with service.engine.connect() as c:
            row = (await c.execute(text(
                "SELECT title, publisher FROM cataloging.bib"))).one()
        assert tuple(row) == ("Edited title", "Edited")

        plan = await imports._plan(service, batch, "overlay", [])  # planned again
        async with service.uow() as uow:
            result = await handlers.write_import(uow, plan)
        assert result.overlaid == 1
        async with service.engine.connect() as c:
            title = (await c.execute(text("SELECT title FROM cataloging.bib"))).scalar_one()
        assert title == "Imported title"


async def test_the_cli_streams_a_file_into_jobs_and_reports_positions_in_the_whole_file(
    infra: Infra,
) -> None:
    """`branchline marc import`: several uploads, a record with a broken leader among them,
    positions counted over the whole file, and a second run matching instead of doubling."""
    isbns = ["9787020002207", "0306406152", "9787506365437", "9787530212004",
             "9787544253994", "9787020024759"]
    good = [marc_file(marc_record(isbn, f"Book {n} /", "Author,", "Press,", "2001."))
            for n, isbn in enumerate(isbns)]
    broken = b"12x45" + good[0][5:]  # a leader whose length is not a number
    data = b"".join([*good[:3], broken, *good[3:]])
    headers = token("cataloger")
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        seen: list[int] = []
        totals = await marcimport.import_file(
            io.BytesIO(data), len(data), client, filename="f.mrc", params={},
            headers=headers, part_bytes=2 * len(good[0]),
            progress=lambda phase, done, total, t, job: seen.append(done))
        assert (totals.records, totals.created, totals.overlaid) == (7, 6, 0)
        assert len(totals.jobs) >= 3  # several uploads
        [(index, reason)] = totals.rejected_records
        assert index == 3 and "unreadable" in reason
        assert seen[-1] == len(data)  # all of the file

        again = await marcimport.import_file(io.BytesIO(data), len(data), client,
                                             filename="f.mrc", params={}, headers=headers)
        assert (again.created, again.overlaid, again.rejected, len(again.jobs)) == (0, 6, 1, 1)
