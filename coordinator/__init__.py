"""The chain's coordinator: federated fine-tuning of the face embedder with Flower.

It handles arrays, metrics and configuration only and imports no face code: ``server_app``
(the Flower ServerApp), ``strategy`` (FedAvg / FedProx with store handling), ``run_config``,
``initial_model``, ``model_versions``, ``flower_app`` (the generated Flower app folder) and
``processes`` (local SuperLink, SuperNodes and runs).
"""
