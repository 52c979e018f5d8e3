"""gn_det.layers.roi_align (CPU RoIAlign with a matmul/index_add backward) against torchvision's op, a
numerical gradient (gradcheck, float64) and a closed form (bilinear sampling of a linear map is exact)."""
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from gn_det.layers.roi_align import roi_align, roi_align_cpu, uses_fast_backward


def _rois(num, height, width, scale, seed, dtype=torch.float64, images=2):
    g = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, images, (num, 1), generator=g).to(dtype)
    xy = torch.rand(num, 2, generator=g, dtype=dtype) * torch.tensor([width, height], dtype=dtype) / scale * 1.2 - 8
    wh = torch.rand(num, 2, generator=g, dtype=dtype) * torch.tensor([width, height], dtype=dtype) / scale * 0.6
    rois = torch.cat([batch, xy, xy + wh], dim=1)
    rois[0, 1:] = torch.tensor([3.0, 4.0, 3.0, 4.0])  # empty box
    rois[1, 1:] = torch.tensor([-50.0, -50.0, -20.0, -30.0]) / scale  # outside the map
    rois[2, 1:] = torch.tensor([0.0, 0.0, width, height]) / scale  # the whole map (border clamping)
    return rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("scale,size", [(0.25, 7), (1.0, 14), (0.125, (5, 3))])
def test_matches_torchvision_forward_and_gradient(aligned, sampling_ratio, scale, size):
    x = torch.randn(2, 5, 13, 17, dtype=torch.float64, requires_grad=True)
    rois = _rois(40, 13, 17, scale, seed=sampling_ratio + 10 * aligned)
    ours = roi_align_cpu(x, rois, size, scale, sampling_ratio, aligned)
    ref = tv_roi_align(x, rois, size, scale, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    assert g_ours.abs().sum() > 0
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_float32_gradient_matches_torchvision():
    x = torch.randn(3, 8, 20, 24, requires_grad=True)
    rois = _rois(100, 20, 24, 0.25, seed=3, dtype=torch.float32, images=3)
    grad_out = torch.randn(100, 8, 7, 7)
    (g_ours,) = torch.autograd.grad(roi_align_cpu(x, rois, 7, 0.25, 0, True), x, grad_out)
    (g_ref,) = torch.autograd.grad(tv_roi_align(x, rois, 7, 0.25, 0, True), x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio,aligned", [(0, True), (2, False)])
def test_gradcheck_float64(sampling_ratio, aligned):
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.5, 9.0, 12.0], [1, -2.0, 3.0, 20.0, 10.0], [1, 5.0, 5.0, 6.0, 27.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_align_cpu(t, rois, 3, 0.5, sampling_ratio, aligned), (x,))


def test_linear_map_closed_form():
    """On f(y, x) = 2y + 3x + 1, bilinear interpolation is exact and the mean of a bin's sampling points is
    f at the bin's centre (points placed symmetrically), so each output is f(bin centre) in map coordinates."""
    h, w = 16, 20
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    x = (2 * ys + 3 * xs + 1)[None, None].requires_grad_(True)
    box = torch.tensor([[0, 8.0, 6.0, 40.0, 50.0]], dtype=torch.float64)  # inside the map at scale 0.25
    out = roi_align_cpu(x, box, (4, 2), 0.25, 2, True)[0, 0]
    x1, y1, x2, y2 = (v * 0.25 - 0.5 for v in (8.0, 6.0, 40.0, 50.0))
    cy = y1 + (torch.arange(4, dtype=torch.float64) + 0.5) * (y2 - y1) / 4
    cx = x1 + (torch.arange(2, dtype=torch.float64) + 0.5) * (x2 - x1) / 2
    torch.testing.assert_close(out, 2 * cy[:, None] + 3 * cx[None, :] + 1)
    out.sum().backward()  # each output spreads weight 1 over the map: the gradient sums to the outputs' count
    torch.testing.assert_close(x.grad.sum(), torch.tensor(8.0, dtype=torch.float64))


def test_no_rois_and_no_grad():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    assert roi_align(x, torch.zeros(0, 5), 7, 1.0, 0, True).shape == (0, 3, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(roi_align(x, _rois(5, 8, 8, 1.0, 0, torch.float32, 1), 7, 1.0, 0, True),
                                   tv_roi_align(x, _rois(5, 8, 8, 1.0, 0, torch.float32, 1), 7, 1.0, 0, True))


def test_dispatch_takes_the_fast_backward_only_where_the_rois_cover_the_map():
    """Many RoIs on a small map -> roi_align_cpu's backward; three RoIs on an R-50 P2-sized map -> torchvision's
    (where the fast backward's fixed cost loses); the values agree either way."""
    big = torch.randn(1, 8, 128, 160, requires_grad=True)
    few = _rois(3, 128, 160, 0.25, 0, torch.float32, 1)
    assert not uses_fast_backward(big, few, (7, 7))
    assert "RoIAlignCPU" not in type(roi_align(big, few, 7, 0.25, 0, True).grad_fn).__name__
    small = torch.randn(2, 8, 16, 16, requires_grad=True)
    many = _rois(40, 16, 16, 1.0, 0, torch.float32, 2)
    assert uses_fast_backward(small, many, (7, 7))
    out = roi_align(small, many, 7, 1.0, 0, True)
    assert "RoIAlignCPU" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, tv_roi_align(small, many, 7, 1.0, 0, True))
