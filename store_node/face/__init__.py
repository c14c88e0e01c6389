"""Face detection, alignment and embedding for loyalnet; start from ``FacePipeline.load()``."""

from store_node.face.detector import Face
from store_node.face.images import ImageError, load_image
from store_node.face.pipeline import FaceEncoding, FacePipeline

__all__ = ["Face", "FaceEncoding", "FacePipeline", "ImageError", "load_image"]
