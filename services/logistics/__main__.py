from services.logistics.app import spec
from shared.service import run

run(spec, "logistics")
