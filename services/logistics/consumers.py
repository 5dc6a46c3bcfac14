"""Logistics' Kafka entry point: which topics it reads (handlers are in handlers.py)."""

from services.logistics.handlers import HANDLERS, prefetch

TOPICS = ("circulation.transfers",)

__all__ = ["HANDLERS", "TOPICS", "prefetch"]
