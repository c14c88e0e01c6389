"""Wire formats of the chain's control plane (generated from protos/loyalnet/chain)."""
