"""The circulation service: where every item is and should be."""

from services.circulation.api import router
from services.circulation.handlers import handlers
from shared.service.app import ServiceSpec

SPEC = ServiceSpec(
    name="circulation",
    handlers=handlers,
    router=router,
    retained=(("anomaly", "at"),),
    description="Where every item is and should be: check-ins, check-outs, transfers.",
)
