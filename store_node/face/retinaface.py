"""RetinaFace with a MobileNetV1-0.25 body: face boxes, scores and 5 landmarks, architecture only.

Attribute names (``body.stage1``, ``fpn.output1``, ``ssh1.conv5X5_1``, ``ClassHead`` ...) are
fixed by the pretrained state_dict (``retinaface_mobilenet0.25.shapes.txt``). Every level of the
FPN and SSH has at most 64 channels, and at that width the weights were trained with
LeakyReLU(0.1) everywhere a nonlinearity appears.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ANCHORS_PER_CELL = 2
PYRAMID_CHANNELS = 64
_LEAK = 0.1


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, *, act: bool = True
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BN (+ LeakyReLU 0.1); keys ``.0`` conv, ``.1`` BN."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.LeakyReLU(_LEAK, inplace=True))
    return nn.Sequential(*layers)


def _separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (carries the stride) + BN + act, pointwise 1x1 + BN + act.

    Six entries so the weight keys land on indices 0, 1 (depthwise) and 3, 4 (pointwise).
    """
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.LeakyReLU(_LEAK, inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(_LEAK, inplace=True),
    )


class MobileNetV1Quarter(nn.Module):
    """MobileNetV1 at width 0.25; returns the stride 8, 16 and 32 maps (64, 128, 256 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, stride=2),
            _separable(8, 16, 1),
            _separable(16, 32, 2),
            _separable(32, 32, 1),
            _separable(32, 64, 2),
            _separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            _separable(64, 128, 2), *(_separable(128, 128, 1) for _ in range(5))
        )
        self.stage3 = nn.Sequential(_separable(128, 256, 2), _separable(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c8 = self.stage1(x)
        c16 = self.stage2(c8)
        c32 = self.stage3(c16)
        return c8, c16, c32


class FeaturePyramid(nn.Module):
    """Top-down FPN: 1x1 lateral projections to 64 channels, nearest upsampling, 3x3 smoothing."""

    def __init__(self, in_channels: tuple[int, int, int], out_ch: int) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out_ch, kernel=1)
        self.output2 = _conv_bn(in_channels[1], out_ch, kernel=1)
        self.output3 = _conv_bn(in_channels[2], out_ch, kernel=1)
        self.merge1 = _conv_bn(out_ch, out_ch)
        self.merge2 = _conv_bn(out_ch, out_ch)

    def forward(
        self, c8: torch.Tensor, c16: torch.Tensor, c32: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p32 = self.output3(c32)
        # Upsample to the exact finer size: odd input sizes make it not exactly twice.
        p16 = self.output2(c16) + F.interpolate(p32, size=c16.shape[-2:], mode="nearest")
        p16 = self.merge2(p16)
        p8 = self.output1(c8) + F.interpolate(p16, size=c8.shape[-2:], mode="nearest")
        p8 = self.merge1(p8)
        return p8, p16, p32


class ContextModule(nn.Module):
    """SSH context module: parallel 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) receptive fields.

    Branch widths are C/2, C/4, C/4, concatenated back to C channels; the 5x5 and 7x7 branches
    share their first conv. (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        quarter = out_ch // 4
        self.conv3X3 = _conv_bn(in_ch, out_ch // 2, act=False)
        self.conv5X5_1 = _conv_bn(in_ch, quarter)
        self.conv5X5_2 = _conv_bn(quarter, quarter, act=False)
        self.conv7X7_2 = _conv_bn(quarter, quarter)
        self.conv7x7_3 = _conv_bn(quarter, quarter, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.conv5X5_1(x)
        branch3 = self.conv3X3(x)
        branch5 = self.conv5X5_2(shared)
        branch7 = self.conv7x7_3(self.conv7X7_2(shared))
        return F.relu(torch.cat((branch3, branch5, branch7), dim=1))


class AnchorHead(nn.Module):
    """1x1 conv predicting ``values`` numbers per anchor; (N, C, H, W) -> (N, H*W*2, values).

    Rows are ordered by cell (row-major) and then by anchor within the cell, the order the
    priors in ``detector.py`` are generated in.
    """

    def __init__(self, in_ch: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_ch, ANCHORS_PER_CELL * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv1x1(x)
        return out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """Face detector network.

    forward: (N, 3, H, W) float BGR with the per-channel mean (104, 117, 123) subtracted, no
    scaling, any H and W -> ``(box_deltas (N, A, 4), class_logits (N, A, 2),
    landmark_deltas (N, A, 10))`` where A = 2 * sum over strides s in (8, 16, 32) of
    ceil(H/s) * ceil(W/s). Deltas are relative to the priors (see ``detector.py``); class 1 of
    the logits is "face".
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = MobileNetV1Quarter()
        self.fpn = FeaturePyramid((64, 128, 256), PYRAMID_CHANNELS)
        self.ssh1 = ContextModule(PYRAMID_CHANNELS, PYRAMID_CHANNELS)
        self.ssh2 = ContextModule(PYRAMID_CHANNELS, PYRAMID_CHANNELS)
        self.ssh3 = ContextModule(PYRAMID_CHANNELS, PYRAMID_CHANNELS)
        self.ClassHead = nn.ModuleList(AnchorHead(PYRAMID_CHANNELS, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(AnchorHead(PYRAMID_CHANNELS, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(AnchorHead(PYRAMID_CHANNELS, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p8, p16, p32 = self.fpn(*self.body(x))
        levels = (self.ssh1(p8), self.ssh2(p16), self.ssh3(p32))
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, levels, strict=True)], 1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, levels, strict=True)], 1)
        marks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, levels, strict=True)], 1)
        return boxes, logits, marks
