"""``loyalnet.store.v1``: stubs generated from ``protos/loyalnet/store/v1/store.proto``.

Regenerate with ``.venv/bin/python scripts/generate_protos.py``; never edit them by hand.
"""
