from services.circulation.app import spec
from shared.service import run

run(spec, "circulation")
