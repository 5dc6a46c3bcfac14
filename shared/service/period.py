"""A report's period: `from` and `to` query dates (both days included), read the same way by
every service's summary endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import Depends, Query

from shared.errors import Invalid

#: Longest period one summary reads, in days (a leap year fits).
MAX_PERIOD_DAYS = 366


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # included

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self, timezone: str) -> tuple[datetime, datetime]:
        """[first midnight, midnight after the last day) in the library's time zone, as
        aware datetimes: what a timestamp column is compared with (`>=` and `<`)."""
        zone = ZoneInfo(timezone)
        return (datetime.combine(self.start, time(), zone),
                datetime.combine(self.end + timedelta(days=1), time(), zone))


async def period(
    start: Annotated[date, Query(alias="from", description="First day (YYYY-MM-DD)")],
    end: Annotated[date, Query(alias="to", description="Last day, included (YYYY-MM-DD)")],
) -> Period:
    """Both dates required; 422 at `["query", "to"]` when `to` is before `from` or the
    period is longer than MAX_PERIOD_DAYS (a summary is one grouped query, not unbounded);
    years outside 1900..2200 are refused as every other date of the API is."""
    for name, day in (("from", start), ("to", end)):
        if not 1900 <= day.year <= 2200:
            raise Invalid(f"{name}: years 1900..2200 only", field=name, kind="out_of_range",
                          location="query")
    if end < start:
        raise Invalid(f"to ({end}) is before from ({start})", field="to",
                      kind="value_error", location="query")
    found = Period(start, end)
    if found.days > MAX_PERIOD_DAYS:
        raise Invalid(f"the period is {found.days} days; at most {MAX_PERIOD_DAYS}",
                      field="to", kind="value_error", location="query")
    return found


PeriodDep = Annotated[Period, Depends(period)]
