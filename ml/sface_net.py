"""SFace's network in torch, built from the weights OpenCV loaded from the shipped ONNX file.

Why: OpenCV's forward pass of the int8 block-quantised SFace graph returns NaN or wrong
rows when given more than one face, so through OpenCV faces can only be embedded one at
a time (about 30 ms of CPU each). OpenCV dequantises the weights when it reads the file;
`cv2.dnn.Net.getLayer(...).blobs` hands them out as float32. The graph is a plain chain
(MobileFaceNet-like: conv, batch norm, PReLU, 14 times, then batch norm, a linear layer
and a last batch norm), so rebuilding it in torch is mechanical, and torch runs it on a
batch of faces. Channels-last convolutions batch well on CPU: a chunk of 8 faces costs
about 60% of the CPU time per face that one face does (`bench_face_model --stages`).

The rebuilt net is checked against OpenCV's own forward pass when it is built
(`matches_opencv`); the batch-norm epsilon, 1e-3, is MXNet's default, which the model was
trained with (1e-5 gives cosines near 0.96 instead of 1.0).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

BN_EPS = 1e-3
INPUT_SIDE = 112
_SCALE = (127.5, 0.0078125)  # the graph's own first two ops: (x - 127.5) * 0.0078125


def _blobs(net: object, name: str) -> list[torch.Tensor]:
    layer = net.getLayer(net.getLayerId(name))  # type: ignore[attr-defined]
    return [torch.from_numpy(np.array(blob, dtype=np.float32)) for blob in layer.blobs]


def _batch_norm(
    mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(mean.numel(), eps=BN_EPS)
    assert norm.running_mean is not None
    assert norm.running_var is not None
    norm.running_mean.copy_(mean.reshape(-1))
    norm.running_var.copy_(var.reshape(-1))
    norm.weight.data.copy_(weight.reshape(-1))
    norm.bias.data.copy_(bias.reshape(-1))
    return norm.eval()


class SFaceNet(nn.Module):
    """(N, 3, 112, 112) float RGB in 0..255 -> (N, 128) raw features, like `feature()`."""

    def __init__(self, net: object) -> None:
        super().__init__()
        names: list[str] = list(net.getLayerNames())  # type: ignore[attr-defined]
        convs = [n for n in names if n.endswith("conv2d")]
        blocks: list[nn.Module] = []
        for conv_name in convs:
            prefix = conv_name.removesuffix("conv2d")
            (weight,) = _blobs(net, conv_name)
            out_ch, in_per_group, kernel, _ = weight.shape
            depthwise = in_per_group == 1 and out_ch > 1
            # The blobs carry no strides: the chain's downsampling points are named here
            # (a wrong guess fails the check against OpenCV at load).
            found = _DEPTHWISE.search(conv_name)
            stride = 2 if found and int(found.group(1)) in _DOWNSAMPLING else 1
            conv = nn.Conv2d(
                out_ch if depthwise else in_per_group,
                out_ch,
                kernel,
                stride,
                kernel // 2,
                groups=out_ch if depthwise else 1,
                bias=False,
            )
            conv.weight.data.copy_(weight)
            prelu = nn.PReLU(out_ch)
            prelu.weight.data.copy_(_blobs(net, prefix + "relu")[0].reshape(-1))
            # Each batch norm folded into its convolution: the same arithmetic, one pass
            # over the activations fewer per block (`ml.embedding_costs`, torch-fused).
            norm = _batch_norm(*_blobs(net, prefix + "batchnorm"))
            blocks += [fuse_conv_bn_eval(conv.eval(), norm), prelu]
        self.body = nn.Sequential(*blocks)
        self.bn1 = _batch_norm(*_blobs(net, "onnx_node!bn1"))
        weight, bias = _blobs(net, "onnx_node!pre_fc1")
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        self.fc.weight.data.copy_(weight)
        self.fc.bias.data.copy_(bias.reshape(-1))
        self.fc1 = _batch_norm(*_blobs(net, "onnx_node!fc1"))
        self.eval()
        self.to(memory_format=torch.channels_last)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = (faces - _SCALE[0]) * _SCALE[1]
        x = self.bn1(self.body(x.contiguous(memory_format=torch.channels_last)))
        # Flattened in (C, H, W) order, as the ONNX graph's Flatten does.
        x = self.fc(x.contiguous().flatten(1))
        fc1 = self.fc1
        return F.batch_norm(
            x, fc1.running_mean, fc1.running_var, fc1.weight, fc1.bias, False, 0.0, BN_EPS
        )


# conv_N blocks whose depthwise conv has stride 2 (112 -> 56 -> 28 -> 14 -> 7).
_DEPTHWISE = re.compile(r"conv_(\d+)_dw_conv2d$")
_DOWNSAMPLING = {3, 5, 7, 13}
