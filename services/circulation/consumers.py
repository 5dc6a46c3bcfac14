"""Circulation's Kafka entry point: which topics it reads (handlers are in handlers.py)."""

from services.circulation.handlers import HANDLERS, prefetch

TOPICS = ("branch.events", "cataloging.items", "logistics.shipments", "network.sites")

__all__ = ["HANDLERS", "TOPICS", "prefetch"]
