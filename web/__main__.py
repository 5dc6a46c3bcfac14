"""`python -m web`: serve the staff pages on WEB_PORT (default 8100)."""

from web.app import run

run()
