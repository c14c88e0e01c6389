"""Wire formats of the store's local API (generated from protos/loyalnet/store)."""
