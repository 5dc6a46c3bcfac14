from services.cataloging.app import spec
from shared.service import run

run(spec, "cataloging")
