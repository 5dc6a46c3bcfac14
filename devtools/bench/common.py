"""What every bench shares: output, percentiles, and the events a branch and cataloging send."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

OWNER, RETURNED_AT = "JX-HN-01", "JX-PH-01"


def say(msg: str) -> None:
    print(msg, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def checkin(barcode: str, branch: str) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": f"branch/{branch}",
        "type": "branch.checkin", "time": datetime.now(UTC).isoformat(), "subject": barcode,
        "datacontenttype": "application/json", "data": {"branch": branch, "barcode": barcode},
    }).encode()


def cataloged(barcode: str) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "branchline/cataloging",
        "type": "cataloging.item_cataloged", "time": datetime.now(UTC).isoformat(),
        "subject": barcode, "data": {"barcode": barcode, "bib_id": "bench", "title": "Bench",
                                     "call_number": "Z", "owning_branch": OWNER,
                                     "site": OWNER},
    }).encode()
