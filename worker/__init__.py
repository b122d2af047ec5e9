"""The outbox worker."""
