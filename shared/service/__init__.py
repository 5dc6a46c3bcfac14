"""The service shell: FastAPI + FastStream in one process, settings, database, auth, metrics."""
