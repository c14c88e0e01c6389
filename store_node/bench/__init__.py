"""Benchmarks: verification metrics and the LFW View 2 run of the face pipeline."""

from store_node.bench.verification import kfold_accuracy, tar_at_far

__all__ = ["kfold_accuracy", "tar_at_far"]
