"""Services' own record tables (anomalies, scans) are pruned by age, and their size shown."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.circulation.models import Anomaly
from services.circulation.spec import SPEC
from shared.contracts import utcnow
from shared.messaging.outbox import prune
from shared.messaging.unit_of_work import SqlUnitOfWork
from shared.service import metrics
from tests.support import Infra, migrated_context, new_env

pytestmark = pytest.mark.integration


async def test_old_anomalies_are_pruned_and_counted(infra: Infra) -> None:
    settings = await new_env(infra, record_retention_days=30)
    async with migrated_context(SPEC, settings) as ctx:
        async with SqlUnitOfWork(ctx) as uow:
            for barcode, age in (("OLD", 31), ("NEW", 29)):
                uow.repo(Anomaly).add(Anomaly(barcode=barcode, kind="unknown_item", detail="-",
                                              event_id=barcode, at=utcnow() - timedelta(age)))
        pruned = await prune(ctx)
        assert pruned.records == 1
        async with SqlUnitOfWork(ctx) as uow:
            left = await uow.repo(Anomaly).find("barcode", ["OLD", "NEW"])
        assert list(left) == ["NEW"]
        gauge = metrics.TABLE_ROWS.labels("circulation", "anomaly")
        assert gauge._value.get() == 1
