"""Messaging mechanics: unit of work, outbox and relay, batch consumer with inbox and DLQ."""
