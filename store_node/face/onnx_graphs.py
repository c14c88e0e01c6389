"""The face networks as ONNX graphs run by ONNX Runtime, exported once per set of weights.

A graph is exported from the project's own torch module (so its weights are the hash-checked
ones, or a store's adopted model) and cached as ``<name>-<digest>.onnx`` in the cache folder
(``loyalnet.settings.cache_home()``), where the digest is the sha256 of the module's weights:
names, shapes, dtypes and bytes of every tensor of its ``state_dict``. Other weights get
another file; the same weights never export twice. A cache file that is damaged is exported
again. Writing goes through a temporary file and an atomic rename, so two processes that
export at once both end with a whole graph.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loyalnet.errors import LoyalnetError
from loyalnet.settings import cache_home

OPSET = 17


class OnnxError(LoyalnetError):
    """ONNX Runtime is missing, or a graph cannot be exported or loaded."""


def weights_digest(network: nn.Module) -> str:
    """Hex sha256 of the module's weights (every ``state_dict`` tensor, in order)."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_graph(
    network: nn.Module,
    name: str,
    example: torch.Tensor,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    cache: Path | None = None,
) -> Path:
    """The ONNX file of ``network`` (exported with ``example`` if not cached yet)."""
    folder = (cache if cache is not None else cache_home()) / "onnx"
    path = folder / f"{name}-opset{OPSET}-{weights_digest(network)[:24]}.onnx"
    if path.is_file() and _loads(path):
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{name}-", suffix=".onnx", dir=folder)
        os.close(handle)
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated but needs no extra packages.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                copy.deepcopy(network).eval(),
                (example,),
                temporary,
                dynamo=False,
                opset_version=OPSET,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            )
        os.replace(temporary, path)
    except OSError as err:
        raise OnnxError(
            f"cannot write the {name} ONNX graph into {folder} ({err.strerror}); make the "
            "folder writable or point LOYALNET_CACHE at one that is."
        ) from err
    finally:
        if "temporary" in locals() and os.path.exists(temporary):
            os.unlink(temporary)
    return path


def session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``path``, with ``threads`` intra-op threads (None:
    as many as torch uses now)."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime() -> Any:
    """The onnxruntime module.

    Raises:
        OnnxError: it is not installed.
    """
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise OnnxError(
            "the onnxruntime backend needs the onnxruntime package: run `bash "
            "scripts/setup.sh` (or pip install onnxruntime), or use the torch backend."
        ) from exc


def _loads(path: Path) -> bool:
    """Whether ONNX Runtime can load the cached file (a torn or altered file is re-exported)."""
    try:
        session(path, threads=1)
    except OnnxError:
        raise
    except Exception:
        return False
    return True
