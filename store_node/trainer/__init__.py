"""A store's answer to a federated training round, and where it is computed.

Flower 1.42 starts a fresh ``flwr-clientapp`` process for every message. Importing torch and
the gallery there costs about 3 CPU-seconds a round per store before any training, on top of
Flower's own start. ``loyalnet store serve`` already runs with them loaded, so it serves the
round (:mod:`.server`, a Unix socket in the store folder) and the ClientApp only forwards it
(:mod:`.client`). Without a running ``store serve`` the ClientApp computes the same answer in
its own process (:mod:`.round`). Either way the round is answered by the store's own code,
within the store's own limits (``store_node.training.floor``).

- :mod:`.answer`: the answer (trained packed backbone and the round's numbers, or why the
  store declined); no torch.
- :mod:`.round`: the answer itself: the floor, the lapsed-consent purge, local training.
- :mod:`.server` / :mod:`.client`: the ``loyalnet.store.v1.Trainer`` service over the socket.
"""
