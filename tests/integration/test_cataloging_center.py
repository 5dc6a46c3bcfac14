"""The cataloging center on the real broker and Postgres: the queue, call numbers,
withdrawal, matching a brief bib to a full record, holdings in imported records, facets,
and an import job that survives its process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pymarc import Field, Record, Subfield
from sqlalchemy import text

from devtools.bench.search import REAL_TITLES
from services.cataloging import domain, handlers, imports
from services.cataloging.spec import SPEC
from shared.messaging.unit_of_work import SqlUnitOfWork
from tests.integration.test_cataloging import (
    cnmarc_record,
    copies_received,
    counts,
    marc_file,
    marc_record,
    run_import,
    site_upserted,
    status_changed,
)
from tests.support import (
    Infra,
    ServiceClient,
    asyncpg_dsn,
    events_of,
    eventually,
    migrated_context,
    new_env,
    produce,
    read_topic,
    running_service,
    token,
)

pytestmark = pytest.mark.integration

CAT = token("cataloger")


async def queue(client: ServiceClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/queue", params=params, headers=CAT)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def queue_of(client: ServiceClient, n: int) -> dict[str, Any]:
    """The queue once it holds `n` items."""
    async def holds_n() -> dict[str, Any] | None:
        found = await queue(client)
        return found if found["total"] == n else None
    return await eventually(holds_n, what=f"{n} items in the queue")


async def test_received_copies_wait_in_the_queue_until_labelled_and_complete(
    infra: Infra,
) -> None:
    """Brief bib from the order → full CNMARC record → 种次号 call number → labels →
    complete: one bib, its items, `cataloging.item_cataloged` only at the end."""
    settings = await new_env(infra, catalog_auto_complete=False)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "acquisition.orders", [
            copies_received("O-1", "L-1", "9787020024759",
                            [("C-1", "JX-HN-01"), ("C-2", "JX-HY-02")],
                            title="Wei cheng", author="Qian, Zhongshu")])
        waiting = await queue_of(client, 2)
        assert {i["owning_branch"] for i in waiting["items"]} == {"JX-HN-01", "JX-HY-02"}
        assert [i["lacks"] for i in waiting["items"]] == [["full_record", "call_number",
                                                           "label"]] * 2
        barcodes = [i["barcode"] for i in waiting["items"]]
        [brief_bib] = {i["bib_id"] for i in waiting["items"]}
        assert (await queue(client, branch="JX-HN-01"))["total"] == 1
        assert (await queue(client, lacks="full_record"))["total"] == 2

        r = await client.post("/queue/complete", json={"barcodes": barcodes}, headers=CAT)
        assert r.status_code == 200 and r.json()["completed"] == []
        assert {x["reason"] for x in r.json()["refused"]} == {"lacks call_number, label"}
        r = await client.post("/queue/labels", json={"barcodes": barcodes}, headers=CAT)
        assert r.json()["labels"] == []
        assert all("call_number" in x["reason"] for x in r.json()["refused"])

        # the national agency's record arrives: the brief bib is overlaid, not doubled
        job, lines = await run_import(client, marc_file(cnmarc_record(
            "978-7-02-002475-9", "围城", "钱锺书", "人民文学出版社", "1991")), on_match="keep")
        assert counts(job) == (0, 1, 0, 0, 0)
        assert (lines[0]["bib_id"], lines[0]["matched_by"]) == (brief_bib, "isbn")
        assert [i["lacks"] for i in (await queue(client))["items"]] == [["label"]] * 2

        r = await client.post("/queue/labels", json={"barcodes": barcodes}, headers=CAT)
        labels = r.json()["labels"]
        assert {(lb["title"], lb["call_number"]) for lb in labels} == {("围城", "I247.5/1")}
        r = await client.post("/queue/complete", json={"barcodes": [*barcodes, barcodes[0]]},
                              headers=CAT)
        assert sorted(r.json()["completed"]) == sorted(barcodes) and r.json()["refused"] == []
        assert (await queue(client))["total"] == 0

        cataloged = events_of(await read_topic(settings, "cataloging.items", at_least=2),
                              "cataloging.item_cataloged")
        assert sorted(e["data"]["barcode"] for e in cataloged) == sorted(barcodes)
        assert {(e["data"]["bib_id"], e["data"]["call_number"], e["data"]["title"])
                for e in cataloged} == {(brief_bib, "I247.5/1", "围城")}
        r = await client.post("/queue/complete", json={"barcodes": barcodes[:1]}, headers=CAT)
        assert r.json()["refused"] == [{"barcode": barcodes[0], "reason": "already catalogued"}]

        # the next title in the same class takes the next number; a cataloger may change it
        await produce(settings, "acquisition.orders", [
            copies_received("O-2", "L-1", "9787506365437", [("C-3", "JX-HN-01")],
                            title="Huo zhe", author="Yu, Hua")])
        await queue_of(client, 1)
        await run_import(client, marc_file(cnmarc_record(
            "978-7-5063-6543-7", "活着", "余华", "作家出版社", "2012")))
        [new] = (await queue(client))["items"]
        r = await client.post("/queue/labels", json={"barcodes": [new["barcode"]]}, headers=CAT)
        assert r.json()["labels"][0]["call_number"] == "I247.5/2"
        r = await client.patch(f"/items/{new['barcode']}", json={"call_number": "I247.57/余1"},
                               headers=CAT)
        assert r.status_code == 200 and r.json()["call_number"] == "I247.57/余1"
        r = await client.patch(f"/items/{new['barcode']}", json={"call_number": "  "},
                               headers=CAT)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "call_number"]
        r = await client.post("/queue/complete", json={"barcodes": ["JX0000000000"]},
                              headers=CAT)
        assert r.status_code == 404
        r = await client.post("/queue/complete", json={"barcodes": []}, headers=CAT)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "barcodes"]
        r = await client.get("/queue", headers=token("desk", site="JX-HN-01"))
        assert r.status_code == 403


async def test_a_brief_bib_without_isbn_meets_its_full_record_by_title_author_and_year(
    infra: Infra,
) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "acquisition.orders", [
            copies_received("O-1", "L-1", "", [("C-1", "JX-HN-01")],
                            title="Local history of Haining", author="Zhang, San")])
        [item] = events_of(await read_topic(settings, "cataloging.items", at_least=1),
                           "cataloging.item_cataloged")
        record = marc_record(None, "Local history of Haining /", "San Zhang", "Haining Press,",
                             "1947.")
        job, lines = await run_import(client, marc_file(record))
        assert counts(job) == (0, 1, 0, 0, 0)
        assert (lines[0]["bib_id"], lines[0]["matched_by"]) == (item["data"]["bib_id"], "title")
        r = await client.get(f"/bibs/{item['data']['bib_id']}", headers=CAT)
        assert (r.json()["publisher"], r.json()["total_items"]) == ("Haining Press", 1)
        # another year is another edition: a new bib
        other = marc_record(None, "Local history of Haining /", "San Zhang", "P,", "1985.")
        job, lines = await run_import(client, marc_file(other))
        assert counts(job) == (1, 0, 0, 0, 0) and lines[0]["bib_id"] != item["data"]["bib_id"]


async def test_withdrawal_takes_a_copy_out_and_waits_while_it_is_lent(infra: Infra) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "network.sites", [site_upserted("JX-HN-01", "Haining")])
        await produce(settings, "acquisition.orders", [
            copies_received("O-1", "L-1", "9787020002207",
                            [("C-1", "JX-HN-01"), ("C-2", "JX-HN-01")])])
        items = events_of(await read_topic(settings, "cataloging.items", at_least=2),
                          "cataloging.item_cataloged")
        lent, shelved = (e["data"]["barcode"] for e in items)
        bib_id = items[0]["data"]["bib_id"]
        now = datetime.now(UTC)
        await produce(settings, "circulation.loans", [
            status_changed(lent, bib_id, "on_loan", "JX-HN-01", "JX-HN-01", now),
            status_changed(shelved, bib_id, "available", "JX-HN-01", "JX-HN-01", now)])

        async def on_loan() -> bool:
            r = await client.get(f"/items/{lent}", headers=CAT)
            return bool(r.json()["status"] == "on_loan")
        await eventually(on_loan, what="circulation's status applied")

        r = await client.post(f"/items/{lent}/withdraw", json={"reason": "damaged"},
                              headers=CAT)
        assert r.status_code == 409 and "on loan" in r.json()["detail"]
        r = await client.post(f"/items/{shelved}/withdraw", json={"reason": " "}, headers=CAT)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason"]
        r = await client.post(f"/items/{shelved}/withdraw", json={"reason": "water damage"},
                              headers=CAT)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["withdrawn_reason"]) == ("withdrawn",
                                                                      "water damage")
        r = await client.post(f"/items/{shelved}/withdraw", json={"reason": "again"},
                              headers=CAT)
        assert r.status_code == 409
        r = await client.post("/items/JX0000000000/withdraw", json={"reason": "x"},
                              headers=CAT)
        assert r.status_code == 404

        [withdrawn] = events_of(await read_topic(settings, "cataloging.items", at_least=3),
                                "cataloging.item_withdrawn")
        assert withdrawn["subject"] == shelved
        assert withdrawn["data"] == {"barcode": shelved, "reason": "water damage",
                                     "bib_id": bib_id, "owning_branch": "JX-HN-01"}
        # circulation saying "available" later changes nothing; holdings count one copy
        await produce(settings, "circulation.loans", [status_changed(
            shelved, bib_id, "available", "JX-HN-01", "JX-HN-01", now + timedelta(seconds=5))])
        r = await client.get(f"/bibs/{bib_id}", headers=CAT)
        assert (r.json()["total_items"], r.json()["total_available"]) == (1, 0)
        assert (await client.get(f"/items/{shelved}", headers=CAT)).json()["status"] == \
            "withdrawn"


def with_holdings(record: Record, tag: str, *holdings: list[tuple[str, str]]) -> Record:
    for subfields in holdings:
        record.add_field(Field(tag=tag, indicators=[" ", " "],
                               subfields=[Subfield(c, v) for c, v in subfields]))
    return record


async def test_holdings_in_imported_records_become_items_on_their_branch_shelves(
    infra: Infra,
) -> None:
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        await produce(settings, "network.sites", [site_upserted("JX-HN-01", "Haining"),
                                                  site_upserted("JX-TX-01", "Tongxiang")])

        async def sites_known() -> bool:
            async with client.service.engine.connect() as c:
                n = (await c.execute(text("SELECT count(*) FROM cataloging.site"))).scalar_one()
            return bool(n == 2)
        await eventually(sites_known, what="sites")

        koha = with_holdings(
            marc_record("9780306406157", "Mathematical tables /", "Smith, John A.",
                        "Academic Press,", "1998."), "952",
            [("a", "JX-HN-01"), ("p", "HN0001"), ("o", "QA47 .S6")],
            [("a", "JX-TX-01"), ("o", "QA47 .S6 c.2")],
            [("a", "JX-NOWHERE"), ("p", "NW0001")],
            [("a", "JX-HN-01"), ("p", "JX0000000018")])
        cn = with_holdings(cnmarc_record("978-7-02-002475-9", "围城", "钱锺书", "人民文学出版社",
                                         "1991"), "905",
                           [("a", "JX-TX-01"), ("b", "TX0001"), ("d", "I247.5"), ("e", "Q1")])
        job, lines = await run_import(client, marc_file(koha), "koha.mrc")
        assert counts(job) == (1, 0, 0, 0, 0) and job["items_created"] == 2
        assert "unknown branch 'JX-NOWHERE'" in lines[0]["reason"]
        assert "the network's own series" in lines[0]["reason"]
        job, lines = await run_import(client, marc_file(cn), "cn.mrc", format="unimarc")
        assert job["items_created"] == 1

        items = {e["data"]["barcode"]: e["data"] for e in events_of(
            await read_topic(settings, "cataloging.items", at_least=3),
            "cataloging.item_cataloged")}
        assert items["HN0001"]["site"] == items["HN0001"]["owning_branch"] == "JX-HN-01"
        assert items["HN0001"]["call_number"] == "QA47 .S6"
        assert items["TX0001"]["call_number"] == "I247.5/Q1"
        [generated] = [b for b in items if b not in ("HN0001", "TX0001")]
        assert generated.startswith("JX") and items[generated]["owning_branch"] == "JX-TX-01"
        r = await client.get("/items/HN0001", headers=CAT)
        assert (r.json()["status"], r.json()["site"]) == ("available", "JX-HN-01")

        # the same file again: the barcodes are items already, nothing doubles
        job, lines = await run_import(client, marc_file(koha), "koha.mrc")
        assert job["items_created"] == 0
        assert "already an item" in lines[0]["reason"]
        assert "without a barcode skipped" in lines[0]["reason"]

        # facets over the matches: titles per owning branch, on a shelf or not, once the
        # service's job has brought the bibs' holdings summaries up to date
        async def summaries_current() -> bool:
            async with client.service.engine.connect() as c:
                left = (await c.execute(text(
                    "SELECT count(*) FROM cataloging.holdings_change"))).scalar_one()
            return bool(left == 0)
        await eventually(summaries_current, what="holdings summaries refreshed")
        r = await client.get("/search", params={"q": "围城"}, headers=CAT)
        assert r.json()["facets"]["branches"] == [
            {"branch": "JX-TX-01", "name": "Tongxiang", "titles": 1}]
        r = await client.get("/search", params={"q": "I247"}, headers=CAT)
        assert r.json()["total"] == 1
        r = await client.get("/search", params={"q": "tables"}, headers=CAT)
        body = r.json()
        assert body["facets"]["availability"] == {"available": 1, "unavailable": 0}
        assert {(f["branch"], f["titles"]) for f in body["facets"]["branches"]} == {
            ("JX-HN-01", 1), ("JX-TX-01", 1)}
        r = await client.get("/search", params={"q": "围城", "branch": "JX-HN-01"}, headers=CAT)
        assert r.json()["results"] == []
        r = await client.get("/search", params={"q": "围城", "branch": "JX-TX-01",
                                                "available": "true"}, headers=CAT)
        assert [h["title"] for h in r.json()["results"]] == ["围城"]


async def test_an_import_job_cut_off_by_its_process_goes_on_without_doubling(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service stops mid-job; started again, it takes the stale job over and goes on
    from the last committed batch: every record once in the report, every bib once."""
    monkeypatch.setattr(imports, "IMPORT_BATCH", 50)
    N = 2_000
    settings = await new_env(infra)
    records = [marc_record(None, f"Book number {n} /", "Author,", "Press,", "2001.")
               for n in range(N)]
    data = marc_file(*records)
    async with running_service(SPEC, settings) as client:
        r = await client.post("/imports", files={"file": ("big.mrc", data)}, headers=CAT)
        job_id = r.json()["job_id"]

        async def some_done() -> bool:
            job = (await client.get(f"/imports/{job_id}", headers=CAT)).json()
            return bool(0 < job["records_done"] < N // 2)
        await eventually(some_done, interval=0.01, what="a batch committed")
    # the process is gone mid-job; its heartbeat goes stale
    async with running_service(SPEC, settings) as client:
        async with client.service.engine.begin() as c:
            status = (await c.execute(text(
                "UPDATE cataloging.importjob SET heartbeat_at = now() - interval '5 minutes' "
                "WHERE job_id = :id RETURNING status"), {"id": job_id})).scalar_one()
        assert status == "running"

        async def done() -> dict[str, Any] | None:
            job: dict[str, Any] = (await client.get(f"/imports/{job_id}", headers=CAT)).json()
            return job if job["status"] == "done" else None
        job = await eventually(done, timeout=60, what="the job resumed and done")
        assert (job["records_done"], job["created"], job["rejected"]) == (N, N, 0)
        async with client.service.engine.connect() as c:
            lines = (await c.execute(text(
                "SELECT count(*), count(DISTINCT position) FROM cataloging.importline "
                "WHERE job_id = :id"), {"id": job_id})).one()
            bibs = (await c.execute(text("SELECT count(*) FROM cataloging.bib"))).scalar_one()
        assert tuple(lines) == (N, N) and bibs == N


async def test_real_chinese_titles_are_found_by_their_whole_title_and_every_two_characters(
    infra: Infra,
) -> None:
    """200 real titles (devtools/bench/data/chinese_titles.tsv) imported as CNMARC records
    without ISBNs; each is found by its title and by every two-character run in it."""
    rows = [line.split("\t") for line in
            REAL_TITLES.read_text(encoding="utf-8").splitlines()[1:]]
    records = []
    for title, author, year, clc in rows:
        record = Record(force_utf8=True)
        record.add_field(Field(tag="200", indicators=["1", " "], subfields=[
            Subfield("a", title), *([Subfield("f", author)] if author else [])]))
        if year:
            record.add_field(Field(tag="210", indicators=[" ", " "],
                                   subfields=[Subfield("d", year)]))
        if clc:
            record.add_field(Field(tag="690", indicators=[" ", " "],
                                   subfields=[Subfield("a", clc)]))
        records.append(record)
    settings = await new_env(infra)
    async with running_service(SPEC, settings) as client:
        job, lines = await run_import(client, marc_file(*records), format="unimarc")
        assert job["created"] + job["kept"] + job["overlaid"] == len(rows) == 200
        assert job["rejected"] == 0
        bib_of = {rows[x["position"]][0]: x["bib_id"] for x in lines}
        searches = missed = 0
        for title, bib_id in bib_of.items():
            pairs = [title[i:i + 2] for i in range(len(title) - 1)]
            for query in dict.fromkeys([title, *pairs]):
                if not domain.search_query(query):
                    continue  # punctuation only, e.g. "·"
                r = await client.get("/search", params={"q": query, "limit": 100},
                                     headers=CAT)
                searches += 1
                missed += bib_id not in [h["bib_id"] for h in r.json()["results"]]
        assert searches > 600 and missed == 0


async def test_a_runner_whose_job_was_taken_over_stops_and_leaves_it_alone(
    infra: Infra, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runner that stalled past the heartbeat finds the job moved on: it stops without
    marking the job done and without deleting the spooled file the new runner reads."""
    monkeypatch.setattr(imports, "IMPORT_BATCH", 50)
    settings = await new_env(infra)
    data = marc_file(*[marc_record(None, f"Book number {n} /", "Author,", "Press,", "2001.")
                       for n in range(2_000)])
    async with running_service(SPEC, settings) as client:
        r = await client.post("/imports", files={"file": ("big.mrc", data)}, headers=CAT)
        job_id = r.json()["job_id"]

        async def started() -> bool:
            job = (await client.get(f"/imports/{job_id}", headers=CAT)).json()
            return bool(job["records_done"] > 0)
        await eventually(started, interval=0.01, what="a batch committed")
        async with client.service.engine.begin() as c:  # another runner's progress
            spool = (await c.execute(text(
                "UPDATE cataloging.importjob SET records_done = records_done + 7 "
                "WHERE job_id = :id RETURNING spool_path"), {"id": job_id})).scalar_one()

        async def stopped() -> bool:
            return not client.service.background
        await eventually(stopped, what="the runner stopped")
        job = (await client.get(f"/imports/{job_id}", headers=CAT)).json()
        assert job["status"] == "running" and job["records_done"] < 2_000
        assert await asyncio.to_thread(Path(spool).exists)


async def test_each_titles_holdings_summary_follows_its_items_without_waiting_on_locks(
    infra: Infra,
) -> None:
    """`owners` / `shelves` on the bib (what search filters and counts facets by) follow
    every insert, update and delete of its items once refreshed. A refresh never waits:
    a bib another transaction holds is skipped and its change kept for the next round."""
    settings = await new_env(infra)
    dsn = asyncpg_dsn(settings.database_url)
    async with migrated_context(SPEC, settings) as ctx:
        db, holder = await asyncpg.connect(dsn), await asyncpg.connect(dsn)

        async def refresh() -> int:
            async with SqlUnitOfWork(ctx) as uow:
                return await asyncio.wait_for(handlers.refresh_holdings(uow), 5)

        async def summary() -> tuple[list[str], list[str]]:
            row = await db.fetchrow("SELECT owners, shelves FROM cataloging.bib")
            return sorted(row["owners"]), sorted(row["shelves"])

        async def logged() -> int:
            return int(await db.fetchval("SELECT count(*) FROM cataloging.holdings_change"))
        try:
            await db.execute(
                "INSERT INTO cataloging.bib (bib_id, isbn_valid, title, created_at) "
                "VALUES ('b1', true, 'T', now());"
                "INSERT INTO cataloging.item (barcode, bib_id, call_number, owning_branch, "
                "site, status, created_at) VALUES "
                "('i1', 'b1', 'X', 'JX-A', 'JX-CENTER', 'in_processing', now()),"
                "('i2', 'b1', 'X', 'JX-B', 'JX-CENTER', 'in_processing', now())")
            assert await summary() == ([], []) and await logged() == 1
            assert await refresh() == 1
            assert await summary() == (["JX-A", "JX-B"], []) and await logged() == 0

            # a transaction holds the bib: the refresh skips it and keeps the change
            held = holder.transaction()
            await held.start()
            await holder.execute("SELECT 1 FROM cataloging.bib WHERE bib_id = 'b1' FOR UPDATE")
            await db.execute("UPDATE cataloging.item SET status = 'available', site = 'JX-A' "
                             "WHERE barcode = 'i1'")
            assert await refresh() == 1
            assert await summary() == (["JX-A", "JX-B"], []) and await logged() == 1
            await held.rollback()
            assert await refresh() == 1
            assert await summary() == (["JX-A", "JX-B"], ["JX-A"]) and await logged() == 0

            await db.execute("UPDATE cataloging.item SET status = 'withdrawn', "
                             "withdrawn_at = now() WHERE barcode = 'i2'")
            await db.execute("UPDATE cataloging.item SET status = 'on_loan' "
                             "WHERE barcode = 'i1'")
            await refresh()
            assert await summary() == (["JX-A"], [])
            await db.execute("DELETE FROM cataloging.item")
            await refresh()
            assert await summary() == ([], []) and await logged() == 0
        finally:
            await db.close()
            await holder.close()
