"""gn_det.utils.cli.ArgumentParser: flags anywhere, negative numbers are values, one-line errors."""
from __future__ import annotations

import argparse

import pytest

from gn_det.engine import default_argument_parser


def _parse(*argv):
    return default_argument_parser().parse_args(list(argv))


def test_flags_after_overrides_are_flags():
    args = _parse("--config", "x.yaml", "SOLVER.MAX_ITER", "5", "--eval-only", "MODEL.WEIGHTS", "w.pth", "--resume",
                  "--num-gpus", "2", "--register-coco", "n", "a.json", "img")
    assert args.eval_only and args.resume and args.num_gpus == 2 and args.config_file == "x.yaml"
    assert args.register_coco == [["n", "a.json", "img"]]
    assert args.opts == ["SOLVER.MAX_ITER", "5", "MODEL.WEIGHTS", "w.pth"]


def test_negative_numbers_and_equals_and_double_dash():
    args = _parse("SOLVER.BASE_LR", "-1e-3", "SOLVER.MAX_ITER", "-5", "--num-gpus=3", "SEED", "-.5", "--",
                  "OUTPUT_DIR", "--odd-name")
    assert args.num_gpus == 3
    assert args.opts == ["SOLVER.BASE_LR", "-1e-3", "SOLVER.MAX_ITER", "-5", "SEED", "-.5", "OUTPUT_DIR", "--odd-name"]


def test_unknown_flag_is_one_line_with_the_closest(capsys):
    parser = default_argument_parser()
    parser.prog = "train_net.py"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--config", "x.yaml", "--num-gpu", "2"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "train_net.py: error: unknown flag --num-gpu; did you mean --num-gpus? (see --help)\n"


def test_argparse_errors_are_one_line(capsys):
    parser = default_argument_parser()
    parser.prog = "train_net.py"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--num-gpus", "two"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("train_net.py: error: argument --num-gpus: invalid int value: 'two' "
                                       "(see --help)\n")
    with pytest.raises(SystemExit):
        parser.parse_args(["--register-coco", "n", "a.json"])
    assert capsys.readouterr().err == ("train_net.py: error: argument --register-coco: expected 3 arguments "
                                       "(see --help)\n")


def test_positional_tools_take_flags_anywhere():
    from gn_det.utils.cli import ArgumentParser

    p = ArgumentParser(prog="t")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--config-file", default="")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(["in.pkl", "out.pth", "--config-file", "X", "MODEL.RESNETS.DEPTH", "50"])
    assert (args.input, args.output, args.config_file, args.opts) == ("in.pkl", "out.pth", "X", ["MODEL.RESNETS.DEPTH", "50"])
