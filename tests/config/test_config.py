"""gn_det.config: the validating CfgNode, _BASE_ inheritance, resolve_config_path, norm options."""
import os

import pytest

import dataclasses

from gn_det.config import (CONFIGS_DIR, CfgNode, ConfigKeyError, ConfigTypeError, check_batch_dependent_norms, conv_keys,
                           get_cfg, norm_keys, norm_options_from_cfg, resolve_config_path)
from gn_det.layers import NORM_REGISTRY, BNOptions, GNOptions, SNOptions
from gn_det.utils import UnknownNameError


def _yaml(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_get_cfg_is_validating_subclass_and_fresh():
    cfg = get_cfg()
    assert isinstance(cfg, CfgNode) and isinstance(cfg.MODEL.RESNETS, CfgNode)
    cfg.MODEL.FPN.NORM = "GN"
    assert get_cfg().MODEL.FPN.NORM == ""


# A table of invalid inputs, each with the message it must produce (pinned text).
BAD_OVERRIDES = [
    # unknown leaf key: names the key and the closest valid ones
    (["MODEL.RESNETS.NROM", "GN"], ConfigKeyError,
     "Unknown config key MODEL.RESNETS.NROM. Did you mean: MODEL.RESNETS.NORM, MODEL.RESNETS.NORM_3X3, "
     "MODEL.RESNETS.CONV?"),
    # unknown section: the full key inside it is quoted
    (["MODEL.RESNET.NORM", "GN"], ConfigKeyError,
     "Unknown config key MODEL.RESNET.NORM. Did you mean: MODEL.RESNETS.NORM, MODEL.RESNETS.NORM_3X3, "
     "MODEL.RESNETS.CONV?"),
    # wrong type: key, value and expected type
    (["MODEL.RESNETS.DEPTH", "fifty"], ConfigTypeError,
     "Config key MODEL.RESNETS.DEPTH has value 'fifty' of type str, expected type int (default: 50)"),
    (["SOLVER.MAX_ITER", "1.5"], ConfigTypeError,
     "Config key SOLVER.MAX_ITER has value 1.5 of type float, expected type int (default: 90000)"),
    (["MODEL.FPN", "3"], ConfigTypeError,
     "Config key MODEL.FPN is a section (CONV, FUSE_TYPE, IN_FEATURES, NORM, OUT_CHANNELS); got the value 3"),
    # unregistered norm name: key and registered names
    (["MODEL.FPN.NORM", "GNN"], UnknownNameError,
     "Unknown NORM name 'GNN' (from MODEL.FPN.NORM). Registered names: {names}. Did you mean 'GN'? Use '' for no norm."),
    (["MODEL.RPN.HEAD_NORM", "batchnorm"], UnknownNameError,
     "Unknown NORM name 'batchnorm' (from MODEL.RPN.HEAD_NORM). Registered names: {names}."),
    # unregistered conv name: key and registered names
    (["MODEL.ROI_BOX_HEAD.CONV", "StdConv"], UnknownNameError,
     "Unknown CONV name 'StdConv' (from MODEL.ROI_BOX_HEAD.CONV). Registered names: '', WS."),
    # odd-length override list
    (["MODEL.FPN.NORM"], ValueError, "Config overrides must come in KEY VALUE pairs, got 1 items: ['MODEL.FPN.NORM']"),
]


@pytest.mark.parametrize("overrides,error,message", BAD_OVERRIDES)
def test_bad_overrides_error_with_pinned_text(overrides, error, message):
    cfg = get_cfg()
    before = cfg.dump()
    with pytest.raises(error) as info:
        cfg.merge_from_list(overrides)
    assert str(info.value).startswith(message.format(names=", ".join(NORM_REGISTRY.names())))
    assert cfg.dump() == before  # nothing half-merged


def test_bad_file_errors_name_key(tmp_path):
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError, match=r"Unknown config key MODEL\.ROI_BOX_HEAD\.NUM_CONVS\. Did you mean: "
                                              r"MODEL\.ROI_BOX_HEAD\.NUM_CONV"):
        cfg.merge_from_file(_yaml(tmp_path, "MODEL:\n  ROI_BOX_HEAD:\n    NUM_CONVS: 4\n"))
    with pytest.raises(UnknownNameError, match=r"Unknown NORM name 'GroupNorm' \(from MODEL\.ROI_MASK_HEAD\.NORM\)"):
        cfg.merge_from_file(_yaml(tmp_path, "MODEL:\n  ROI_MASK_HEAD:\n    NORM: GroupNorm\n"))


def test_lossless_coercions():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1", "SOLVER.STEPS", "[10, 20]", "INPUT.MIN_SIZE_TRAIN", "[600, 800]"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.STEPS == (10, 20) and cfg.INPUT.MIN_SIZE_TRAIN == (600, 800)


def test_base_inheritance_and_override(tmp_path):
    child = _yaml(tmp_path, f'_BASE_: "{CONFIGS_DIR / "gn_mask_rcnn.yaml"}"\nMODEL:\n  GN:\n    NUM_GROUPS: 16\n')
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.MASK_ON and cfg.MODEL.GN.NUM_GROUPS == 16
    assert cfg.SOLVER.MAX_ITER == 270000  # from ../common/schedule_3x.yaml, two levels up


def test_base_key_refused_in_overrides():
    with pytest.raises(ConfigKeyError, match="_BASE_ can only be used in YAML files"):
        get_cfg().merge_from_other_cfg(CfgNode({"_BASE_": "x.yaml"}))


def test_resolve_config_path(tmp_path):
    assert resolve_config_path("gn_mask_rcnn.yaml") == str(CONFIGS_DIR / "gn_mask_rcnn.yaml")
    assert resolve_config_path("gn_mask_rcnn_shapes.yaml") == str(CONFIGS_DIR / "tiny" / "gn_mask_rcnn_shapes.yaml")
    assert resolve_config_path("tiny/Tiny-CPU.yaml") == str(CONFIGS_DIR / "tiny" / "Tiny-CPU.yaml")
    own = _yaml(tmp_path, "SEED: 1\n")
    assert resolve_config_path(own) == own
    with pytest.raises(FileNotFoundError) as e:
        resolve_config_path("gn_mask_rnn.yaml")
    assert str(e.value) == ("config file 'gn_mask_rnn.yaml' not found (as a path, or in configs/ and configs/tiny/); "
                            "did you mean gn_mask_rcnn.yaml?")
    with pytest.raises(FileNotFoundError, match=r"; did you mean tiny/gn_mask_rcnn_shapes.yaml\?$"):
        resolve_config_path("gn_mask_rcnn_shape.yaml")


def test_norm_options_from_cfg():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.GN.NUM_GROUPS", "16", "MODEL.GN.EPSILON", "1e-6", "MODEL.BN.MOMENTUM", "0.01",
                         "MODEL.SN.USE_BN", "False", "MODEL.SN.FREEZE_STATS", "True", "MODEL.BN.EPSILON", "0.0"])
    o = norm_options_from_cfg(cfg)  # one options instance per family (the closed NormOptions bundle is gone)
    assert o.of(GNOptions) == GNOptions(num_groups=16, dim_per_gp=-1, epsilon=1e-6)
    assert o.of(BNOptions) == BNOptions(momentum=0.01, epsilon=0.0)
    assert o.of(SNOptions) == SNOptions(use_bn=False, momentum=0.1, epsilon=1e-5, freeze_stats=True)


def test_norm_keys_are_the_norm_slots():
    keys = {k for k, _ in norm_keys(get_cfg())}
    assert keys == {"MODEL.RESNETS.NORM", "MODEL.RESNETS.NORM_3X3", "MODEL.FPN.NORM", "MODEL.RPN.HEAD_NORM",
                    "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM"}  # not SOLVER.WEIGHT_DECAY_NORM (a float)


def test_conv_keys_sit_next_to_the_norm_keys():
    assert dict(conv_keys(get_cfg())) == {"MODEL.RESNETS.CONV": "", "MODEL.FPN.CONV": "", "MODEL.RPN.HEAD_CONV": "",
                                          "MODEL.ROI_BOX_HEAD.CONV": "", "MODEL.ROI_MASK_HEAD.CONV": ""}
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.CONV", "WS", "MODEL.FPN.CONV", "WS"])  # GN+WS
    assert (cfg.MODEL.RESNETS.CONV, cfg.MODEL.FPN.CONV) == ("WS", "WS")


def test_norm_option_nodes_are_generated_from_the_options_dataclasses():
    cfg = get_cfg()
    for family in (GNOptions, BNOptions, SNOptions):
        node = cfg
        for part in family.config_node.split("."):
            node = node[part]
        assert dict(node) == {f.name.upper(): f.default for f in dataclasses.fields(family)}
    assert (cfg.MODEL.GN.NUM_GROUPS, cfg.MODEL.BN.EPSILON, cfg.MODEL.SN.USE_BN) == (32, 1e-5, True)


def test_get_cfg_adds_the_node_of_a_family_registered_later():
    from gn_det.layers import FamilyOptions, NormTraits, register_norm

    @dataclasses.dataclass(frozen=True)
    class LateOptions(FamilyOptions):
        config_node = "MODEL.LATE"
        alpha: float = 0.5

    register_norm("TestLate", options=LateOptions, traits=NormTraits(kind="TestLate"))(lambda c, o: None)
    try:
        cfg = get_cfg()
        cfg.merge_from_list(["MODEL.LATE.ALPHA", 2])
        assert norm_options_from_cfg(cfg).of(LateOptions) == LateOptions(alpha=2.0)
    finally:
        NORM_REGISTRY.unregister("TestLate")
    assert "LATE" not in get_cfg().MODEL


# (overrides, images per process, processes, refused keys or None)
BATCH_CHECKS = [
    ([], 1, 1, None),  # FrozenBN: fine
    (["MODEL.RESNETS.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "SN"], 1, 1,
     "MODEL.RESNETS.NORM='BN', MODEL.ROI_BOX_HEAD.NORM='SN'"),
    (["MODEL.RESNETS.NORM", "BN"], 2, 1, None),
    (["MODEL.FPN.NORM", "SyncBN"], 1, 1, "MODEL.FPN.NORM='SyncBN'"),  # one process: plain BN
    (["MODEL.FPN.NORM", "SyncBN", "MODEL.RPN.HEAD_NORM", "SyncSN"], 1, 2, None),  # pooled over 2 processes
    (["MODEL.FPN.NORM", "SN", "MODEL.SN.USE_BN", False], 1, 1, None),
    (["MODEL.FPN.NORM", "SN", "MODEL.SN.FREEZE_STATS", True], 1, 1, None),
    (["MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", 5], 1, 1, None),  # frozen: FrozenBN
    (["MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.NORM_3X3", "BN"], 1, 1, "MODEL.RESNETS.NORM_3X3='BN'"),
    (["MODEL.RESNETS.NORM", "BN", "MODEL.ALLOW_BATCH_STATS_AT_1_IMAGE", True], 1, 1, None),
]


@pytest.mark.parametrize("overrides,images,processes,refused", BATCH_CHECKS)
def test_batch_dependent_norms_at_1_image_per_process(overrides, images, processes, refused):
    cfg = get_cfg()
    cfg.merge_from_list(overrides)
    if refused is None:
        check_batch_dependent_norms(cfg, images, processes)
        return
    with pytest.raises(ValueError) as info:
        check_batch_dependent_norms(cfg, images, processes)
    assert str(info.value) == (
        f"{refused} would compute batch statistics from 1 image per process in training; use FrozenBN, GN, LN, IN, "
        "FRN, EvoNormS0 or SN/SyncSN with MODEL.SN.USE_BN=False instead, SyncBN/SyncSN/SyncBRN over more than one process, more images "
        "per process (SOLVER.IMS_PER_BATCH), or set MODEL.ALLOW_BATCH_STATS_AT_1_IMAGE True to train it anyway"
    )


def test_every_default_key_has_a_comment():
    """defaults.py: each key assignment carries a one-line comment on its line or the line above."""
    lines = open(os.path.join(os.path.dirname(__file__), "../../gn_det/config/defaults.py")).read().splitlines()
    missing = [line for i, line in enumerate(lines)
               if line.startswith("_C.") and "= CN(" not in line and "#" not in line and not lines[i - 1].lstrip().startswith("#")]
    assert missing == []
