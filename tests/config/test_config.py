"""gn_det.config: the validating CfgNode, _BASE_ inheritance, resolve_config_path, norm options."""
import os

import pytest

from gn_det.config import (CONFIGS_DIR, CfgNode, ConfigKeyError, ConfigTypeError, get_cfg, norm_keys,
                           norm_options_from_cfg, resolve_config_path)
from gn_det.layers import NORM_REGISTRY
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
     "MODEL.RESNETS.NUM_GROUPS?"),
    # unknown section: the full key inside it is quoted
    (["MODEL.RESNET.NORM", "GN"], ConfigKeyError,
     "Unknown config key MODEL.RESNET.NORM. Did you mean: MODEL.RESNETS.NORM, MODEL.RESNETS.NORM_3X3, MODEL.FPN.NORM?"),
    # wrong type: key, value and expected type
    (["MODEL.RESNETS.DEPTH", "fifty"], ConfigTypeError,
     "Config key MODEL.RESNETS.DEPTH has value 'fifty' of type str, expected type int (default: 50)"),
    (["SOLVER.MAX_ITER", "1.5"], ConfigTypeError,
     "Config key SOLVER.MAX_ITER has value 1.5 of type float, expected type int (default: 90000)"),
    (["MODEL.FPN", "3"], ConfigTypeError,
     "Config key MODEL.FPN is a section (FUSE_TYPE, IN_FEATURES, NORM, OUT_CHANNELS); got the value 3"),
    # unregistered norm name: key and registered names
    (["MODEL.FPN.NORM", "GNN"], UnknownNameError,
     "Unknown NORM name 'GNN' (from MODEL.FPN.NORM). Registered names: {names}. Did you mean 'GN'? Use '' for no norm."),
    (["MODEL.RPN.HEAD_NORM", "batchnorm"], UnknownNameError,
     "Unknown NORM name 'batchnorm' (from MODEL.RPN.HEAD_NORM). Registered names: {names}."),
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
    o = norm_options_from_cfg(cfg)
    assert (o.gn_num_groups, o.gn_dim_per_gp, o.gn_eps, o.bn_momentum, o.bn_eps) == (16, -1, 1e-6, 0.01, 0.0)
    assert (o.sn_use_bn, o.sn_freeze_stats, o.gn_groups_key) == (False, True, "MODEL.GN.NUM_GROUPS")
    cfg.merge_from_list(["MODEL.GN.DIM_PER_GP", "8"])
    assert norm_options_from_cfg(cfg).gn_groups_key == "MODEL.GN.DIM_PER_GP"


def test_norm_keys_are_the_norm_slots():
    keys = {k for k, _ in norm_keys(get_cfg())}
    assert keys == {"MODEL.RESNETS.NORM", "MODEL.RESNETS.NORM_3X3", "MODEL.FPN.NORM", "MODEL.RPN.HEAD_NORM",
                    "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM"}  # not SOLVER.WEIGHT_DECAY_NORM (a float)


def test_every_default_key_has_a_comment():
    """defaults.py: each key assignment carries a one-line comment on its line or the line above."""
    lines = open(os.path.join(os.path.dirname(__file__), "../../gn_det/config/defaults.py")).read().splitlines()
    missing = [line for i, line in enumerate(lines)
               if line.startswith("_C.") and "= CN(" not in line and "#" not in line and not lines[i - 1].lstrip().startswith("#")]
    assert missing == []
