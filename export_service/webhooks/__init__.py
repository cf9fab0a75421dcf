"""Webhooks: signed notifications of a job's changes, delivered at least once.

The outbox they are delivered from is the store's (export_service.store.outbox, written by the
transitions); here are where they may go (destination), how they are signed (signing), the
settings and the endpoints a create names (endpoints), and the deliverer that any replica runs
(deliverer)."""
