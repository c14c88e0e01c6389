"""What a model manifest says about the tensors: a canonical digest and the array list.

Both the coordinator (writing a manifest, ``coordinator.model_versions``) and a store (checking
received tensors against one, ``store_node.model_check``) compute these, so they are defined
once, here, with no face code. Kept apart from ``loyalnet.model_signing`` because they need
torch and the signing code must not: the coordinator's command line never imports torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict in a canonical form, independent of torch.save's bytes.

    Hashes, for each key in sorted order: the key, the dtype, the shape and the values as
    little-endian bytes, each length-prefixed. Equal states give equal digests on any machine,
    so a store can check tensors it received without the file they were saved in.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        array = state[key].detach().cpu().contiguous().numpy()
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        for part in (key.encode(), array.dtype.str.encode(), repr(array.shape).encode()):
            digest.update(len(part).to_bytes(8, "big") + part)
        data = array.tobytes()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def array_list(state: Mapping[str, torch.Tensor]) -> list[list[object]]:
    """``[name, dtype, shape]`` of every tensor in order, as the manifest's ``arrays`` holds it.

    dtype is torch's name without the prefix (``"float32"``); shape a list of ints.
    """
    return [
        [name, str(value.dtype).removeprefix("torch."), list(value.shape)]
        for name, value in state.items()
    ]
