"""The cataloging service: bib records and items, catalogued once, centrally."""

from services.cataloging.api import router
from services.cataloging.handlers import handlers
from shared.service.app import ServiceSpec

SPEC = ServiceSpec(
    name="cataloging",
    handlers=handlers,
    router=router,
    description="Bib records and items: received copies catalogued once, centrally; "
                "one search across the network; MARC imports.",
)
