"""The chain's control plane: the coordinator's own gRPC services beside Flower's channel.

``loyalnet.chain.v1`` (``protos/loyalnet/chain/v1/chain.proto``) defines two services on one
mutual-TLS port:

- ``StoreSync`` (:mod:`.store_sync`): stores heartbeat with aggregate numbers, pull the
  commands queued for them (erase a member, adopt a model version) and acknowledge each with a
  receipt signed by their own node key, verified here with the key the chain registered;
- ``Admin`` (:mod:`.admin`): admins and viewers read stores, runs, model versions, erasures
  and the audit log; admins promote and roll back model versions, request erasures and start
  training runs.

Who calls is decided by the client certificate only (:mod:`.callers`). State lives in the
registry database (``coordinator.registry``); heartbeats are buffered in memory and written in
batches (:mod:`.heartbeats`), the one write that grows with the number of stores.
:class:`.server.ControlPlane` puts the pieces together.
"""
