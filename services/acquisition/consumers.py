"""Acquisition's Kafka entry point: which topics it reads (handlers are in handlers.py)."""

from services.acquisition.handlers import HANDLERS, prefetch

TOPICS = ("network.sites",)

__all__ = ["HANDLERS", "TOPICS", "prefetch"]
