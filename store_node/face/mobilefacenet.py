"""MobileFaceNet: the 128-d face embedding network, architecture only.

The attribute names are fixed by the pretrained state_dict (``mobilefacenet_ms1m.shapes.txt``);
the activations (ReLU6 almost everywhere, plain ReLU in ``dw_conv``, none after ``gdconv``) were
read off the reference ONNX graph, which is what the weights were trained with.
"""

from __future__ import annotations

import torch
from torch import nn

EMBEDDING_DIM = 128
INPUT_SIZE = 112

# (expansion t, output channels c, repeats n, first stride s) for the inverted-residual body.
_BOTTLENECK_PLAN: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def _conv_bn_relu6(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU6; indices 0/1/2 match the ``*.0`` / ``*.1`` weight keys."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise + BN + ReLU, then 1x1 pointwise + BN + ReLU (the ``dw_conv`` stage).

    Keeps the spatial size; (N, C, H, W) -> (N, C_out, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        # Plain ReLU here, unlike the rest of the network: the reference graph says so.
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        out: torch.Tensor = self.relu(self.bn2(self.pointwise(x)))
        return out


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, 3x3 depthwise (carries the stride), linear 1x1 project.

    The skip connection is used only when the block keeps both the size and the channel count.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_skip = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            _conv_bn_relu6(in_ch, hidden, 1),
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        return x + y if self.use_skip else y


class GlobalDepthwise(nn.Module):
    """7x7 depthwise conv without padding + BN: pools the 7x7 map to 1x1 with learnt weights."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.depthwise(x))
        return out


class MobileFaceNet(nn.Module):
    """Face embedder: (N, 3, 112, 112) normalised RGB -> (N, 128) raw (not L2-normalised).

    Input pixels are RGB scaled to [0, 1], then normalised per channel with the ImageNet mean
    (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Spatial path: 112 -> 56 (conv1) ->
    28 -> 14 -> 7 (bottlenecks) -> 1 (gdconv).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu6(3, 64, 3, stride=2)
        self.dw_conv = DepthwiseSeparable(64, 64)
        blocks: list[nn.Module] = []
        channels = 64
        for expansion, out_ch, repeats, first_stride in _BOTTLENECK_PLAN:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                blocks.append(InvertedResidual(channels, out_ch, stride, expansion))
                channels = out_ch
        self.features = nn.Sequential(*blocks)
        self.conv2 = _conv_bn_relu6(channels, 512, 1)
        self.gdconv = GlobalDepthwise(512)
        self.conv3 = nn.Conv2d(512, EMBEDDING_DIM, 1)
        self.bn = nn.BatchNorm2d(EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_conv(self.conv1(x))
        x = self.gdconv(self.conv2(self.features(x)))
        x = self.bn(self.conv3(x))
        return torch.flatten(x, 1)
