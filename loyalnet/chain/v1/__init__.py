"""``loyalnet.chain.v1``: stubs generated from ``protos/loyalnet/chain/v1/chain.proto``.

Regenerate with ``.venv/bin/python scripts/generate_protos.py``; never edit them by hand.
"""
