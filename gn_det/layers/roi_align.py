"""RoIAlign on the CPU with torchvision's forward and a faster backward.

torchvision's CPU backward walks every RoI, bin and sampling point in scalar C++ and scatters each
point's four bilinear weights into the (N, C, H, W) gradient one at a time, strided by H*W: the largest
single op of the quick start's backward (issue 18). Bilinear weights factor into a y and an x part, and
the mean over a bin's gh x gw points into 1/gh * 1/gw, so each RoI's pooling is two small matrices over
a window of the map, ``out = ay @ window @ ax^T`` (``_bilinear_maps``, torchvision's arithmetic: the
half-pixel offset when ``aligned``, ``sampling_ratio`` 0 = ``ceil(roi size / output size)`` points per
bin and axis, points outside ``[-1, size]`` contributing zero, clamping at the border). The backward is
then two batched matmuls per chunk of RoIs and one ``index_add_`` of C-vectors into a channels-last
gradient. Measured on the shared 2-core CPU, 1 thread: 2.6-3.3x faster than torchvision's backward on
quick-start-sized maps (64 channels), the same on R-50 P2 maps (256 channels, 200x336).

Gradients flow to the features only (as torchvision's: none to the boxes). On CUDA, for half types, or
without autograd, torchvision's op runs (``roi_align`` below decides).
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align", "roi_align_cpu", "uses_fast_backward", "MIN_BIN_SHARE"]

_CHUNK_SAMPLES = 1 << 23  # window values gathered per chunk (RoIs x window pixels x channels), ~32 MB


def _axis_samples(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, pooled: int, max_grid: int,
                  size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices (R, pooled, max_grid, 2) of the low/high neighbours along one axis and their weights, zero
    for points outside the map or beyond a RoI's own grid, as torchvision's bilinear_interpolate does."""
    dtype = start.dtype
    p = torch.arange(pooled, dtype=dtype, device=start.device).view(1, pooled, 1)
    i = torch.arange(max_grid, device=start.device).view(1, 1, max_grid)
    g = grid.view(-1, 1, 1)
    # torchvision: start + p * bin + (i + .5) * bin / grid, evaluated in the input's precision
    coord = start.view(-1, 1, 1) + p * bin_size.view(-1, 1, 1) \
        + (i.to(dtype) + 0.5) * bin_size.view(-1, 1, 1) / g.clamp(min=1).to(dtype)
    valid = (coord >= -1.0) & (coord <= size) & (i < g)
    coord = coord.clamp(min=0)
    low = coord.to(torch.int64)  # truncation, coord >= 0
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    weights = torch.stack([1.0 - frac, frac], dim=-1) * valid.unsqueeze(-1).to(dtype)
    return torch.stack([low, high], dim=-1), weights


def _bilinear_maps(rois: torch.Tensor, height: int, width: int, pooled: Tuple[int, int], spatial_scale: float,
                   sampling_ratio: int, aligned: bool):
    """Each RoI's pooling as two small matrices over a window of the map: output = ay @ window @ ax^T.

    Returns ``ay`` (K, PH, WH) and ``ax`` (K, PW, WW), the bin means of the bilinear weights along y and x
    (torchvision's weights are products of a y and an x factor, and the mean over a bin's gh x gw points is
    1/gh * 1/gw), and ``pix`` (K, WH * WW): the flat index n*H*W + y*W + x of each window pixel (clamped to
    the map; clamped duplicates carry weight 0)."""
    ph, pw = pooled
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].to(torch.int64)
    x1, y1, x2, y2 = (rois[:, k] * spatial_scale - offset for k in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # torchvision forces malformed RoIs to 1x1 in the legacy mode only
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    if sampling_ratio > 0:
        grid_h = torch.full_like(batch, sampling_ratio)
        grid_w = grid_h
        gh = gw = int(sampling_ratio)
    else:  # adaptive: ceil(roi / pooled) points per bin and axis, none for an empty RoI. The largest grid
        # bounds the shapes: read through numpy, as this path runs on CPU tensors only (no device sync)
        grid_h = torch.ceil(roi_h / ph).clamp(min=0).to(torch.int64)
        grid_w = torch.ceil(roi_w / pw).clamp(min=0).to(torch.int64)
        gh, gw = max(1, int(grid_h.numpy().max(initial=0))), max(1, int(grid_w.numpy().max(initial=0)))
    yi, yw = _axis_samples(y1, bin_h, grid_h, ph, gh, height)  # (K, ph, gh, 2)
    xi, xw = _axis_samples(x1, bin_w, grid_w, pw, gw, width)  # (K, pw, gw, 2)
    yw = yw / grid_h.clamp(min=1).to(yw.dtype).view(-1, 1, 1, 1)
    xw = xw / grid_w.clamp(min=1).to(xw.dtype).view(-1, 1, 1, 1)
    k = len(rois)
    y0, x0 = yi.view(k, -1).amin(1), xi.view(k, -1).amin(1)
    yoff, xoff = yi.view(k, -1) - y0[:, None], xi.view(k, -1) - x0[:, None]
    win_h, win_w = int(yoff.numpy().max()) + 1, int(xoff.numpy().max()) + 1
    ay = yw.new_zeros((k, ph, win_h)).scatter_add_(2, yoff.view(k, ph, -1), yw.reshape(k, ph, -1))
    ax = xw.new_zeros((k, pw, win_w)).scatter_add_(2, xoff.view(k, pw, -1), xw.reshape(k, pw, -1))
    rows_y = (y0[:, None] + torch.arange(win_h)).clamp(max=height - 1)
    cols_x = (x0[:, None] + torch.arange(win_w)).clamp(max=width - 1)
    pix = (batch.view(-1, 1, 1) * (height * width) + rows_y[:, :, None] * width + cols_x[:, None, :]).view(k, -1)
    return ay, ax, pix


class _RoIAlignCPU(torch.autograd.Function):
    """torchvision's forward; the backward as batched matmuls over each RoI's window and one index_add
    into a channels-last gradient (torchvision's backward scatters one scalar at a time, strided by H*W)."""

    @staticmethod
    def forward(ctx, x, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.args = (x.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return tv_roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad_out):
        (rois,) = ctx.saved_tensors
        (n, c, h, w), output_size, spatial_scale, sampling_ratio, aligned = ctx.args
        ay, ax, pix = _bilinear_maps(rois.to(grad_out.dtype), h, w, output_size, spatial_scale, sampling_ratio,
                                     aligned)
        ph, pw = output_size
        grad_rows = grad_out.new_zeros((n * h * w, c))
        k, win_h, win_w = len(rois), ay.shape[2], ax.shape[2]
        g = grad_out.permute(0, 2, 3, 1).reshape(k, ph, pw * c)
        chunk = max(1, _CHUNK_SAMPLES // (win_h * win_w * c))
        for s in range(0, k, chunk):
            sl = slice(s, s + chunk)
            t = torch.bmm(ay[sl].transpose(1, 2), g[sl]).view(-1, win_h, pw, c)  # (r, WH, PW, C)
            t = torch.matmul(ax[sl].transpose(1, 2).unsqueeze(1), t)  # (r, WH, WW, C)
            grad_rows.index_add_(0, pix[sl].reshape(-1), t.reshape(-1, c))
        grad_x = grad_rows.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()
        return grad_x, None, None, None, None, None


def roi_align_cpu(x: torch.Tensor, rois: torch.Tensor, output_size: Union[int, Tuple[int, int]],
                  spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align(x, rois, ...)`` for (K, 5) ``rois`` (batch index, x1, y1, x2, y2) on CPU:
    the same forward, the backward of ``_RoIAlignCPU``. (K, C, PH, PW) in the dtype of ``x``."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(int(v) for v in output_size)
    if rois.numel() == 0 or not (torch.is_grad_enabled() and x.requires_grad):
        return tv_roi_align(x, rois, size, spatial_scale, sampling_ratio, aligned)
    return _RoIAlignCPU.apply(x, rois.to(x.dtype), size, float(spatial_scale), int(sampling_ratio), bool(aligned))


# roi_align_cpu's backward when the RoIs' output bins number at least this share of the map's pixels: below it
# (a few RoIs on a large map, e.g. an untrained R-50's P2 in benchmarks/bench_step.py) its fixed cost, a
# zeroed channels-last gradient of the whole map and the copy back, outweighs torchvision's scalar scatter.
# Measured at 2 threads, C 64-256, 36x36-128x160 maps: the two are even at a share of 0.02-0.15.
MIN_BIN_SHARE = 0.1


def uses_fast_backward(x: torch.Tensor, rois: torch.Tensor, output_size: Tuple[int, int]) -> bool:
    """Whether ``roi_align`` takes ``roi_align_cpu`` for these shapes (decided from shapes alone, no device read)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or rois.dim() != 2 or x.dim() != 4:
        return False
    bins = rois.shape[0] * output_size[0] * output_size[1]
    return bins >= MIN_BIN_SHARE * x.shape[0] * x.shape[2] * x.shape[3]


def roi_align(x: torch.Tensor, rois: torch.Tensor, output_size: Union[int, Tuple[int, int]],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align`` with (K, 5) RoIs: ``roi_align_cpu`` (torchvision's forward, the faster
    backward) on CPU in float32/float64 when the RoIs cover enough of the map (``uses_fast_backward``),
    torchvision's kernel otherwise (CUDA, half types, a few RoIs on a large map). The result is the same."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(int(v) for v in output_size)
    if uses_fast_backward(x, rois, size):
        return roi_align_cpu(x, rois, size, spatial_scale, sampling_ratio, aligned)
    return tv_roi_align(x, rois, size, spatial_scale, sampling_ratio, aligned)
