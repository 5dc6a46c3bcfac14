"""Write each service's AsyncAPI document to docs/asyncapi/ (`make docs`)."""

from __future__ import annotations

import json

from shared.contracts import SERVICES
from shared.service.app import load_spec
from shared.service.asyncapi import document
from shared.service.settings import PROJECT_ROOT


def main() -> None:
    out = PROJECT_ROOT / "docs" / "asyncapi"
    out.mkdir(parents=True, exist_ok=True)
    for service in SERVICES:
        path = out / f"{service}.json"
        text = json.dumps(document(load_spec(service)), indent=2, ensure_ascii=False,
                          sort_keys=True)
        path.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
