"""Cataloging's Kafka entry point: which topics it reads (handlers are in handlers.py)."""

from services.cataloging.handlers import HANDLERS, make_handlers, prefetch

TOPICS = ("acquisition.orders", "circulation.loans", "network.sites")

__all__ = ["HANDLERS", "TOPICS", "make_handlers", "prefetch"]
