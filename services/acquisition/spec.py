"""The acquisition service: buying for the whole network."""

from services.acquisition.api import router
from services.acquisition.handlers import handlers
from shared.service.app import ServiceSpec

SPEC = ServiceSpec(
    name="acquisition",
    handlers=handlers,
    router=router,
    description="Buying for the whole network: vendors, funds, orders split across "
    "branches, and receiving.",
)
