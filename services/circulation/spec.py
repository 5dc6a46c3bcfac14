"""The circulation service: where every item is and should be."""

from services.circulation.api import router
from services.circulation.handlers import expire_uncollected, handlers, watch_transfers
from shared.service.app import Job, ServiceSpec

SPEC = ServiceSpec(
    name="circulation",
    handlers=handlers,
    router=router,
    retained=(("anomaly", "at"),),
    jobs=(Job("hold-shelf-expiry", 600.0, expire_uncollected),
          Job("late-transfers", 300.0, watch_transfers)),
    description="Where every item is and should be: check-ins, check-outs, holds, transfers.",
)
