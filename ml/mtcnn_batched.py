"""MTCNN's detection (facenet-pytorch's `detect_face`) with R-net's and O-net's inputs cut
out of the frames in one vectorised step instead of one `interpolate` call per candidate.

facenet-pytorch crops every candidate box that survives a stage and shrinks it to 24x24
(R-net) or 48x48 (O-net) with `interpolate(mode="area")`, one box at a time in a Python
loop: tens of calls per frame whose fixed cost is paid the same in a batch of one frame
and in a batch of 32, so that part gained nothing from batching. Area resampling is
`adaptive_avg_pool2d`: each output pixel is the mean of a rectangle of the crop whose
edges are integers. With a summed-area table of each frame, every such mean is four
look-ups, so all candidates of all frames of a batch come out of one gather; the frames
are 8-bit, so the sums are exact integers and the inputs the nets see are the numbers
the per-box loop produced (to float rounding of the division). On CPU that loop was
about a tenth of detection's time (40-100 candidates per frame at 320x240 and 640x480);
the gather costs 10-35% less than the loop, so detection as a whole gains a few per
cent: P-net over the image pyramid, per-pixel work, is most of it. Everything else
(pyramid, P-net, NMS, box regression, thresholds, landmark maths, the largest-first
order of `MTCNN.detect(select_largest)`) is facenet-pytorch's own code or a line-for-line
copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)
from numpy.typing import NDArray
from torchvision.ops.boxes import batched_nms


@dataclass(frozen=True)
class FrameFaces:
    """One frame's faces, largest box first (MTCNN's `select_largest`)."""

    boxes: NDArray[np.float32]  # (n, 4): x1, y1, x2, y2
    probs: NDArray[np.float32]  # (n,)
    points: NDArray[np.float32]  # (n, 5, 2)


def detect(mtcnn: MTCNN, frames: NDArray[np.uint8]) -> list[FrameFaces]:
    """Faces in a batch of equal-size RGB frames, (batch, height, width, 3) uint8: what
    `mtcnn.detect(frames, landmarks=True)` finds."""
    with torch.no_grad():
        boxes, points, image_inds = _detect(mtcnn, frames)
    found = []
    for index in range(len(frames)):
        mine = image_inds == index
        box, point = boxes[mine], points[mine]
        # Same order as MTCNN.detect (including its argsort's handling of ties).
        order = np.argsort((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[::-1]
        box, point = box[order], point[order]
        found.append(
            FrameFaces(
                boxes=np.ascontiguousarray(box[:, :4], dtype=np.float32),
                probs=np.ascontiguousarray(box[:, 4], dtype=np.float32),
                points=np.ascontiguousarray(point, dtype=np.float32),
            )
        )
    return found


def _detect(mtcnn: MTCNN, frames: NDArray[np.uint8]) -> tuple[Any, Any, Any]:
    device = mtcnn.device
    pnet, rnet, onet = mtcnn.pnet, mtcnn.rnet, mtcnn.onet
    threshold = mtcnn.thresholds
    pixels = torch.as_tensor(np.ascontiguousarray(frames), device=device)
    model_dtype = next(pnet.parameters()).dtype
    # NHWC memory seen as NCHW: channels-last, as the nets are.
    imgs = pixels.permute(0, 3, 1, 2).type(model_dtype)
    h, w = imgs.shape[2:4]
    boxes, image_inds = _first_stage(imgs, pnet, mtcnn.min_face_size, mtcnn.factor, threshold[0])
    table = _summed_area_table(frames, device)

    # Second stage
    if len(boxes) > 0:
        boxes, image_inds, crops = _crops(table, boxes, image_inds, w, h, 24)
    if len(boxes) > 0:
        out = fixed_batch_process(crops, rnet)
        out0 = out[0].permute(1, 0)
        out1 = out[1].permute(1, 0)
        score = out1[1, :]
        ipass = score > threshold[1]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds = image_inds[ipass]
        mv = out0[:, ipass].permute(1, 0)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
        boxes = bbreg(boxes, mv)
        boxes = rerec(boxes)

    # Third stage
    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes) > 0:
        boxes, image_inds, crops = _crops(table, boxes, image_inds, w, h, 48)
    if len(boxes) > 0:
        out = fixed_batch_process(crops, onet)
        out0 = out[0].permute(1, 0)
        out1 = out[1].permute(1, 0)
        out2 = out[2].permute(1, 0)
        score = out2[1, :]
        points = out1
        ipass = score > threshold[2]
        points = points[:, ipass]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds = image_inds[ipass]
        mv = out0[:, ipass].permute(1, 0)
        w_i = boxes[:, 2] - boxes[:, 0] + 1
        h_i = boxes[:, 3] - boxes[:, 1] + 1
        points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        points = torch.stack((points_x, points_y)).permute(2, 1, 0)
        boxes = bbreg(boxes, mv)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    return boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()


def _first_stage(
    imgs: torch.Tensor, pnet: Any, minsize: float, factor: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-net over the image pyramid: candidate boxes, squared, and their frames."""
    h, w = imgs.shape[2:4]
    m = 12.0 / minsize
    minl = min(h, w) * m
    scale_i = m
    scales = []
    while minl >= 12:
        scales.append(scale_i)
        scale_i = scale_i * factor
        minl = minl * factor

    boxes, image_inds, scale_picks = [], [], []
    offset = 0
    for scale in scales:
        im_data = imresample(imgs, (int(h * scale + 1), int(w * scale + 1)))
        im_data = (im_data - 127.5) * 0.0078125
        reg, probs = pnet(im_data)
        boxes_scale, image_inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold)
        boxes.append(boxes_scale)
        image_inds.append(image_inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], image_inds_scale, 0.5)
        scale_picks.append(pick + offset)
        offset += boxes_scale.shape[0]

    all_boxes, all_inds = torch.cat(boxes, dim=0), torch.cat(image_inds, dim=0)
    picks = torch.cat(scale_picks, dim=0)
    all_boxes, all_inds = all_boxes[picks], all_inds[picks]
    pick = batched_nms(all_boxes[:, :4], all_boxes[:, 4], all_inds, 0.7)
    all_boxes, all_inds = all_boxes[pick], all_inds[pick]

    regw = all_boxes[:, 2] - all_boxes[:, 0]
    regh = all_boxes[:, 3] - all_boxes[:, 1]
    qq1 = all_boxes[:, 0] + all_boxes[:, 5] * regw
    qq2 = all_boxes[:, 1] + all_boxes[:, 6] * regh
    qq3 = all_boxes[:, 2] + all_boxes[:, 7] * regw
    qq4 = all_boxes[:, 3] + all_boxes[:, 8] * regh
    squared = rerec(torch.stack([qq1, qq2, qq3, qq4, all_boxes[:, 4]]).permute(1, 0))
    return squared, all_inds


def _summed_area_table(frames: NDArray[np.uint8], device: torch.device) -> torch.Tensor:
    """Each frame's sums of the pixels above and left of each point, as rows of 3 channels
    indexed by (frame * (height + 1) + y) * (width + 1) + x. int32 holds any frame up to
    2^31 / 255 pixels (8.4 MP) exactly. Built on the CPU: the frames arrive from numpy."""
    count, height, width, channels = frames.shape
    table = np.zeros((count, height + 1, width + 1, channels), dtype=np.int32)
    # Frame by frame, along rows first: about twice as fast as whole-batch passes.
    for frame, sums in zip(frames, table[:, 1:, 1:], strict=True):
        np.cumsum(frame, axis=1, dtype=np.int32, out=sums)
        np.cumsum(sums, axis=0, dtype=np.int32, out=sums)
    return torch.from_numpy(table.reshape(-1, channels)).to(device)


def _bin_edges(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """(boxes, 2 * size): where adaptive_avg_pool2d's bins of a crop of `length` begin, then
    where they end; bin i covers [floor(i * length / size), ceil((i + 1) * length / size))."""
    i = torch.arange(size, device=start.device)
    n = length[:, None]
    lo = start[:, None] + torch.div(i * n, size, rounding_mode="floor")
    hi = start[:, None] + torch.div((i + 1) * n + size - 1, size, rounding_mode="floor")
    return torch.cat((lo, hi), dim=1)


def _crops(
    table: torch.Tensor,
    boxes: torch.Tensor,
    image_inds: torch.Tensor,
    w: int,
    h: int,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each box's crop of its frame, area-resampled to size x size and normalised as
    MTCNN's nets expect; boxes whose crop would be empty are dropped (facenet-pytorch
    skips their crop, which would pair the remaining crops with the wrong boxes)."""
    y, ey, x, ex = (torch.as_tensor(v, device=boxes.device).long() for v in pad(boxes, w, h))
    keep = (ey > y - 1) & (ex > x - 1)
    if not bool(keep.all()):
        boxes, image_inds = boxes[keep], image_inds[keep]
        y, ey, x, ex = y[keep], ey[keep], x[keep], ex[keep]
    # The crop is rows y-1 .. ey-1 and columns x-1 .. ex-1 (facenet-pytorch's slice).
    rows = _bin_edges(y - 1, ey - y + 1, size) + image_inds.long()[:, None] * (h + 1)
    cols = _bin_edges(x - 1, ex - x + 1, size)
    # One gather of the table at every pair of bin edges; a bin's sum is four of them.
    index = (rows * (w + 1)).int()[:, :, None] + cols.int()[:, None, :]
    corners = table.index_select(0, index.view(-1)).view(len(boxes), 2 * size, 2 * size, -1)
    lo, hi = slice(0, size), slice(size, 2 * size)
    sums = (corners[:, hi, hi] - corners[:, lo, hi]).sub_(corners[:, hi, lo] - corners[:, lo, lo])
    heights, widths = rows[:, hi] - rows[:, lo], cols[:, hi] - cols[:, lo]
    counts = (heights[:, :, None] * widths[:, None, :]).unsqueeze(-1)
    means = sums.to(boxes.dtype) / counts.to(boxes.dtype)
    # (boxes, size, size, 3) seen as NCHW: channels-last, as the nets are.
    return boxes, image_inds, (means.permute(0, 3, 1, 2) - 127.5) * 0.0078125
