from services.acquisition.app import spec
from shared.service import run

run(spec, "acquisition")
