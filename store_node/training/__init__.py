"""Local training on a store for federated fine-tuning of the face embedder.

Start from :func:`train_store_round` (one round on a store's consenting members) and
:func:`backbone_state` (what leaves the store). The class rows of the CosFace head stay in the
store's gallery, sealed; only the backbone is sent.
"""

from store_node.training.augment import AugmentConfig, augment
from store_node.training.backbone import backbone_state, fine_tuned_version, load_backbone
from store_node.training.cosface import CosFaceHead
from store_node.training.errors import TrainingError
from store_node.training.local import TrainingConfig, TrainingOutcome, train_store_round

__all__ = [
    "AugmentConfig",
    "CosFaceHead",
    "TrainingConfig",
    "TrainingError",
    "TrainingOutcome",
    "augment",
    "backbone_state",
    "fine_tuned_version",
    "load_backbone",
    "train_store_round",
]
