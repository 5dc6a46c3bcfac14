"""The circulation service: where every item is and should be."""

from services.circulation.api import router
from services.circulation.handlers import expire_uncollected, handlers
from shared.service.app import Job, ServiceSpec

SPEC = ServiceSpec(
    name="circulation",
    handlers=handlers,
    router=router,
    retained=(("anomaly", "at"),),
    jobs=(Job("hold-shelf-expiry", 600.0, expire_uncollected),),
    description="Where every item is and should be: check-ins, check-outs, holds, transfers.",
)
