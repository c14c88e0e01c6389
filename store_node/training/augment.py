"""Camera-realistic augmentation of aligned face crops, in torch, reproducible from a seed.

Enrolment photos are taken up close at the till; the store's cameras see the same people
smaller, softer and under other light. Each crop is degraded the way such a camera would,
in the order light meets the sensor:

1. optical or motion blur: a Gaussian of standard deviation sigma pixels (probability
   ``blur_probability``), ``G(x, y) = exp(-(x^2 + y^2) / (2 sigma^2))``, normalised, applied
   separably with reflected borders;
2. low resolution: the 112-pixel face shrunk to ``side`` pixels (antialiased bilinear) and
   enlarged back to 112 (bilinear), as a face a few metres from a ceiling camera is
   (probability ``low_resolution_probability``);
3. exposure and colour, always, each factor uniform in ``[1 - a, 1 + a]``: brightness
   ``p * b``; contrast ``(p - mean) * c + mean`` around the image's mean luminance;
   saturation ``(p - Y) * s + Y`` around each pixel's luminance
   ``Y = 0.299 R + 0.587 G + 0.114 B``; white balance, one gain per channel;
4. a horizontal mirror (probability ``flip_probability``): the ArcFace template is left-right
   symmetric to within half a pixel, so a mirrored crop is still an aligned face.

Values are clamped to [0, 1] and normalised exactly as the embedder does
(:mod:`store_node.training.pixels`). All random numbers are drawn up front, in a fixed order,
from the caller's ``torch.Generator``: the same generator state gives the same batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from store_node.face.mobilefacenet import INPUT_SIZE
from store_node.training.errors import TrainingError
from store_node.training.pixels import crops_to_unit, normalise

_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """How strongly to degrade crops; every default is a mild, plausible store camera.

    Attributes:
        flip_probability: chance of a horizontal mirror, in [0, 1].
        brightness: brightness factor drawn from [1 - brightness, 1 + brightness]; in [0, 1).
        contrast: contrast factor range, as ``brightness``.
        saturation: saturation factor range, as ``brightness``; 1 - saturation = 0 is greyscale.
        white_balance: per-channel gain range, as ``brightness``; small, as cameras correct it.
        blur_probability: chance of a Gaussian blur, in [0, 1].
        blur_sigma: (low, high) standard deviation of the blur in pixels of the 112 crop, > 0.
        low_resolution_probability: chance of the down-then-up scaling, in [0, 1].
        low_resolution_side: (low, high) face side in pixels after shrinking, 8 to 112.
    """

    flip_probability: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    white_balance: float = 0.08
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.6)
    low_resolution_probability: float = 0.3
    low_resolution_side: tuple[int, int] = (24, 64)

    def __post_init__(self) -> None:
        probabilities = (
            self.flip_probability,
            self.blur_probability,
            self.low_resolution_probability,
        )
        ranges = (self.brightness, self.contrast, self.saturation, self.white_balance)
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise TrainingError("augmentation probabilities must lie in [0, 1].")
        if not all(0.0 <= r < 1.0 for r in ranges):
            raise TrainingError(
                "brightness, contrast, saturation and white_balance ranges must lie in [0, 1)."
            )
        low_sigma, high_sigma = self.blur_sigma
        if not 0.0 < low_sigma <= high_sigma:
            raise TrainingError(
                f"blur_sigma {self.blur_sigma} must be (low, high), 0 < low <= high."
            )
        low_side, high_side = self.low_resolution_side
        if not 8 <= low_side <= high_side <= INPUT_SIZE:
            raise TrainingError(
                f"low_resolution_side {self.low_resolution_side} must be (low, high) with "
                f"8 <= low <= high <= {INPUT_SIZE} pixels."
            )


def augment(
    crops: NDArray[np.uint8], generator: torch.Generator, config: AugmentConfig | None = None
) -> torch.Tensor:
    """Randomly degraded, normalised copies of ``crops``, ready for MobileFaceNet.

    Args:
        crops: (N, 112, 112, 3) uint8 RGB aligned faces, N >= 1.
        generator: the only source of randomness; advanced by this call.
        config: augmentation strengths; None uses ``AugmentConfig()``.

    Returns:
        (N, 3, 112, 112) float32, ImageNet-normalised (before normalisation every value was in
        [0, 1]).

    Raises:
        TrainingError: the crops have another shape or dtype.
    """
    config = config or AugmentConfig()
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE,) * 2 + (3,):
        raise TrainingError(
            f"augment needs (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) uint8 aligned crops, got "
            f"{crops.dtype} {crops.shape}."
        )
    count = crops.shape[0]
    # Every draw happens here, whatever branches run below, so one seed means one batch.
    flip = torch.rand(count, generator=generator) < config.flip_probability
    brightness = _factors(count, config.brightness, generator)
    contrast = _factors(count, config.contrast, generator)
    saturation = _factors(count, config.saturation, generator)
    gains = _factors(count * 3, config.white_balance, generator).view(count, 3)
    blur = torch.rand(count, generator=generator) < config.blur_probability
    sigma = _uniform(count, *config.blur_sigma, generator)
    low_res = torch.rand(count, generator=generator) < config.low_resolution_probability
    low_side, high_side = config.low_resolution_side
    side = torch.randint(low_side, high_side + 1, (count,), generator=generator)

    pixels = crops_to_unit(crops)
    pixels = gaussian_blur(pixels, torch.where(blur, sigma, torch.zeros_like(sigma)))
    pixels = low_resolution(pixels, torch.where(low_res, side, torch.full_like(side, INPUT_SIZE)))
    pixels = jitter_colour(pixels, brightness, contrast, saturation, gains)
    pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(3), pixels)
    return normalise(pixels.clamp_(0.0, 1.0))


def gaussian_blur(pixels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image blurred with its own Gaussian; sigma 0 leaves an image unchanged.

    Args:
        pixels: (N, C, H, W) float images, H and W larger than the kernel radius.
        sigma: (N,) standard deviations in pixels, >= 0.

    Returns:
        (N, C, H, W), borders reflected.
    """
    count, channels, height, width = pixels.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max()))) if count else 1
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    # A tiny floor keeps sigma = 0 finite; its kernel is then a unit impulse to float precision.
    spread = sigma.to(pixels.dtype).clamp_min(1e-3).view(-1, 1)
    kernels = torch.exp(-(offsets.view(1, -1) ** 2) / (2.0 * spread**2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    # One group per (image, channel): every image gets its own kernel in a single conv call.
    per_channel = kernels.repeat_interleave(channels, dim=0)
    flat = pixels.reshape(1, count * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, per_channel.view(-1, 1, 1, 2 * radius + 1), groups=count * channels)
    flat = F.conv2d(flat, per_channel.view(-1, 1, 2 * radius + 1, 1), groups=count * channels)
    return flat.view(count, channels, height, width)


def low_resolution(pixels: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Each image shrunk to ``side[i]`` pixels square and enlarged back to its size.

    Args:
        pixels: (N, C, H, W) float images.
        side: (N,) integer sides; an image whose side is >= max(H, W) is left unchanged.

    Returns:
        (N, C, H, W) images that keep only the detail a ``side``-pixel face holds.
    """
    height, width = pixels.shape[2:]
    out = pixels.clone()
    for index in torch.nonzero(side < max(height, width)).flatten().tolist():
        target = int(side[index])
        small = F.interpolate(
            pixels[index : index + 1],
            size=(target, target),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        out[index : index + 1] = F.interpolate(
            small, size=(height, width), mode="bilinear", align_corners=False
        )
    return out


def jitter_colour(
    pixels: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    gains: torch.Tensor,
) -> torch.Tensor:
    """Brightness, contrast, saturation and white balance, one factor set per image.

    Args:
        pixels: (N, 3, H, W) RGB in [0, 1].
        brightness, contrast, saturation: (N,) factors; 1 changes nothing.
        gains: (N, 3) per-channel multipliers; 1 changes nothing.

    Returns:
        (N, 3, H, W), not clamped.
    """
    luma_weights = torch.tensor(_LUMA, dtype=pixels.dtype).view(1, 3, 1, 1)
    out = pixels * brightness.view(-1, 1, 1, 1)
    mean_luma = (out * luma_weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    out = (out - mean_luma) * contrast.view(-1, 1, 1, 1) + mean_luma
    luma = (out * luma_weights).sum(dim=1, keepdim=True)
    out = (out - luma) * saturation.view(-1, 1, 1, 1) + luma
    return out * gains.view(-1, 3, 1, 1)


def _factors(count: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    return _uniform(count, 1.0 - spread, 1.0 + spread, generator)


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)
