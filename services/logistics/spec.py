"""The logistics service: how items move."""

from services.logistics.api import router
from services.logistics.handlers import handlers
from shared.service.app import ServiceSpec

SPEC = ServiceSpec(
    name="logistics",
    handlers=handlers,
    router=router,
    retained=(("scan", "received_at"),),
    description="How items move: the network's sites, shipments and drivers' scans.",
)
