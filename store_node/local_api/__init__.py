"""The store's local gRPC API (``loyalnet.store.v1``) for its own systems: the till, the tablet."""
