"""Model cost: FLOPs of a conv and of a GroupNorm against their formulas, a detector's norm FLOPs
against the norms' input sizes (forward hooks), parameters against the model's, the training-forward
memory against the tensors one conv keeps."""
import pytest
import torch
from torch import nn

from gn_det.benchmark.model_cost import count_flops, flop_analysis, parameter_table, training_activation_bytes
from gn_det.config import config_from_args
from gn_det.layers import get_norm, is_norm, norm_name
from gn_det.modeling import build_model

TINY = "tests/tools/tiny_gn.yaml"


@pytest.mark.parametrize("cin,cout,k,stride,groups,hw", [(3, 8, 3, 1, 1, (17, 23)), (16, 32, 1, 2, 1, (20, 20)),
                                                          (8, 8, 3, 2, 4, (9, 12))])
def test_conv_flops_are_the_multiply_adds_of_the_formula(cin, cout, k, stride, groups, hw):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups)
    x = torch.rand(2, cin, *hw)
    h_out = (hw[0] + 2 * (k // 2) - k) // stride + 1
    w_out = (hw[1] + 2 * (k // 2) - k) // stride + 1
    expected = 2 * cout * (cin // groups) * k * k * h_out * w_out  # N x Cout x Hout x Wout outputs, each Cin/g*k*k MACs
    assert flop_analysis(conv, (x,)).total() == expected


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_flops_are_five_per_element_with_affine_four_without(affine):
    norm = get_norm("GN", 32)
    if not affine:
        norm = nn.GroupNorm(8, 32, affine=False)
    x = torch.rand(2, 32, 7, 9)
    analysis = flop_analysis(norm, (x,))
    assert analysis.total() == (5 if affine else 4) * x.numel()  # fvcore's norm formula: mean, var, normalize (+ affine)
    assert set(analysis.by_operator()) == {"group_norm"}


def _tiny_detector():
    torch.manual_seed(0)
    cfg = config_from_args(TINY, ["MODEL.DEVICE", "cpu"])
    return build_model(cfg)


def test_parameter_total_is_the_models_and_parts_add_up():
    model = _tiny_detector()
    rows = {r.part: r for r in parameter_table(model)}
    assert rows["total"].total == sum(p.numel() for p in model.parameters())
    assert sum(r.total for name, r in rows.items() if name != "total") == rows["total"].total
    model.backbone.bottom_up.stem.requires_grad_(False)
    rows = {r.part: r for r in parameter_table(model)}
    assert rows["stem"].trainable == 0 and rows["total"].trainable == rows["total"].total - rows["stem"].total


def test_detector_norm_flops_equal_five_per_normalized_element():
    model = _tiny_detector().eval()
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0].numel()))
             for name, m in model.named_modules() if is_norm(m)]
    image = torch.rand(3, 64, 64) * 255
    with torch.no_grad():
        model([image], original_sizes=[(64, 64)])
    for h in hooks:
        h.remove()
    stats = count_flops(model, [(image, (64, 64))])
    assert set(stats.by_norm) == {"GN"} and {norm_name(m) for m in model.modules() if is_norm(m)} == {"GN"}
    assert stats.by_norm["GN"] * 1e9 == pytest.approx(5 * sum(seen.values()), rel=1e-9)
    assert stats.total[0] == pytest.approx(sum(stats.by_operator.values()))
    assert sum(stats.by_part.values()) == pytest.approx(stats.total[0], rel=1e-6)  # every flop is in some part
    assert "torchvision::roi_align" in stats.uncounted
    assert model.training is False


def test_training_memory_counts_what_autograd_keeps():
    class Toy(nn.Module):  # the detector's training API: model(images, targets) -> {loss name: loss}
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)

        def forward(self, images, targets):
            x = torch.stack(images)
            return {"loss": self.conv(x).square().sum()}

    model = Toy()
    images = [torch.rand(3, 10, 12)]
    saved, peak = training_activation_bytes(model, images, [{}])
    # conv keeps its input (for the weight gradient); square keeps the conv output: 3 + 4 channels of 10x12 floats
    assert saved == (3 + 4) * 10 * 12 * 4 and peak is None
    assert model.conv.weight.grad is None and model.training


@pytest.mark.cuda
def test_cost_on_cuda_matches_cpu_and_measures_the_peak():
    from gn_det.benchmark.model_cost import activation_stats, dataset_samples, flop_stats
    from gn_det.data import generate_shapes_dataset, register_coco_instances
    import tempfile

    root = tempfile.mkdtemp()
    generate_shapes_dataset(root, num_train=1, num_val=2, size=64, seed=0)
    register_coco_instances("cost_cuda_val", {}, f"{root}/annotations/instances_val.json", f"{root}/val")
    cfg = config_from_args(TINY, ["MODEL.DEVICE", "cpu"])
    samples = dataset_samples(cfg, "cost_cuda_val", 2)
    model = _tiny_detector()
    cpu = flop_stats(model, samples)
    model.cuda()
    gpu = flop_stats(model, samples)
    assert gpu.by_part["res5"] == pytest.approx(cpu.by_part["res5"])  # the trunk does not depend on detections
    act = activation_stats(model, samples)
    assert act.train_peak is not None and act.train_peak[0] > act.train_saved[0] > 0
