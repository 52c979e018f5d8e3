"""The package's reference numbers file parses, and every row names its source."""
import csv

import pytest

from gn_det.benchmark.reference import (
    REFERENCE_FILE, ReferenceFileError, load_reference_numbers, references_for,
)

SOURCES = ("detectron2 MODEL_ZOO.md", "Detectron projects/GN/README.md", "switchablenorms/SwitchNorm_Detection README.md",
           "open-mmlab/mmdetection configs/gn+ws/README.md", "open-mmlab/mmdetection configs/gn/README.md",
           "megvii-model/MABN README.md", "Wu & He, Group Normalization (ECCV 2018)",
           "Luo et al., Switchable Normalization (ICLR 2019)")


def test_every_row_parses_and_names_a_known_source():
    rows = load_reference_numbers()
    with open(REFERENCE_FILE, newline="") as f:
        raw = list(csv.DictReader(f))
    assert len(rows) == len(raw) > 0
    for row in rows:
        assert row.source.startswith(SOURCES), row
        ap = [row.values[k] for k in ("box_AP", "mask_AP")]
        assert any(v is not None for v in ap), row  # a row without any AP has nothing to compare
        assert all(v is None or 0 < v < 100 for v in ap), row


def test_numbers_read_from_the_file():
    gn = references_for("mask_rcnn_R_50_FPN_3x_gn", load_reference_numbers())
    d2 = next(r for r in gn if r.source.startswith("detectron2"))
    assert (d2.values["box_AP"], d2.values["mask_AP"], d2.values["train_mem_gb"]) == (42.6, 38.6, 7.3)
    assert references_for("configs/mask_rcnn_R_50_FPN_3x_gn.yaml", load_reference_numbers()) == gn
    gnws = references_for("mask_rcnn_R_50_FPN_2x_gnws", load_reference_numbers())
    assert [(r.values["box_AP"], r.values["mask_AP"]) for r in gnws] == [(40.6, 36.6)]
    brn = references_for("scratch_mask_rcnn_R_50_FPN_2x_brn", load_reference_numbers())
    assert [(r.values["box_AP"], r.values["mask_AP"], r.values["ims_per_gpu"]) for r in brn] == [(34.07, 30.98, 2)]


@pytest.mark.parametrize("body, message", [
    ("config,source\nx,y\n", "missing column(s) source_config"),
    (None, "row 'x' has no 'source'; every number needs one"),
    ("bad-number", "column 'box_AP' must be a number or empty, got 'n/a'"),
])
def test_bad_reference_file(tmp_path, body, message):
    header = open(REFERENCE_FILE).readline()
    columns = header.strip().split(",")
    values = {c: "" for c in columns}
    values.update(config="x", source="paper")
    if body is None:
        values["source"] = ""
    if body == "bad-number":
        values["box_AP"] = "n/a"
    if body is None or body == "bad-number":
        body = header + ",".join(values[c] for c in columns) + "\n"
    path = tmp_path / "ref.csv"
    path.write_text(body)
    with pytest.raises(ReferenceFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_reference_numbers(str(path))


def test_papers_fine_tuning_numbers_of_issue_20():
    """The GN and SN papers' fine-tuning rows the fine-tuning comparison prints beside its table."""
    rows = load_reference_numbers()
    got = {(r.config, r.values["schedule"]): (r.values["box_AP"], r.values["mask_AP"]) for r in rows}
    assert got[("gn_paper_mask_rcnn_R_50_FPN_bnstar", None)] == (38.6, 34.2)
    assert got[("gn_paper_mask_rcnn_R_50_FPN_bnstar_gn", None)] == (39.5, 34.4)
    assert got[("gn_paper_mask_rcnn_R_50_FPN_gn", None)] == (40.0, None)
    assert got[("gn_paper_mask_rcnn_R_50_FPN_gn", "2x")] == (40.3, 35.7)
    assert got[("sn_paper_mask_rcnn_R_50_FPN_bndagger_sn", None)] == (40.0, 34.8)
    assert got[("sn_paper_mask_rcnn_R_50_FPN_gn", None)] == (40.2, 35.7)
    assert got[("sn_paper_mask_rcnn_R_50_FPN_sn", None)] == (41.0, 36.5)
    c4 = {k[0].rsplit("_", 1)[1]: v[0] for k, v in got.items() if k[0].startswith("sn_paper_faster_rcnn_R_50_C4")}
    assert c4 == {"bndagger": 29.6, "bn": 19.3, "gn": 32.7, "sn": 33.0}
