"""The cataloging service: bib records and items, catalogued once, centrally."""

from services.cataloging.api import router
from services.cataloging.handlers import HOLDINGS_EVERY_S, handlers, keep_holdings
from services.cataloging.imports import resume_stale
from shared.service.app import Job, ServiceSpec

SPEC = ServiceSpec(
    name="cataloging",
    handlers=handlers,
    router=router,
    description="Bib records and items: received copies catalogued once, centrally; "
                "the cataloging queue; one search across the network; MARC import jobs.",
    jobs=(Job("import-jobs", 5.0, resume_stale),
          Job("holdings-summaries", HOLDINGS_EVERY_S, keep_holdings)),
)
