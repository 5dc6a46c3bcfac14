"""Local tooling: embedded Postgres and broker, the process supervisor, the CLI, the bench.

Nothing in services/ or shared/ imports this package, and the service image leaves it out.
"""
