"""The logistics service: how items move."""

from services.logistics.api import router
from services.logistics.handlers import handlers, planned_today
from shared.service.app import Job, ServiceSpec

SPEC = ServiceSpec(
    name="logistics",
    handlers=handlers,
    router=router,
    retained=(("scan", "received_at"),),
    jobs=(Job("daily-plan", 60.0, planned_today),),
    description="How items move: the network, shipments, crates, daily routes and drivers' "
                "scans.",
)
