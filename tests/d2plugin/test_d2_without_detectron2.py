"""Without detectron2, importing gn_det.detectron2 is one clear ImportError, and gn_det itself never imports it."""
import subprocess
import sys

# A process in which `import detectron2` fails as it does where detectron2 is not installed.
NO_DETECTRON2 = "import sys; sys.modules['detectron2'] = None\n"


def _python(code):
    return subprocess.run([sys.executable, "-c", NO_DETECTRON2 + code], capture_output=True, text=True, timeout=300)


def test_import_without_detectron2_is_one_clear_import_error():
    proc = _python("import gn_det.detectron2")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: gn_det.detectron2 needs detectron2") and "installs from its source" in last


def test_gn_det_builds_and_trains_without_detectron2():
    code = ("import gn_det, gn_det.engine, gn_det.modeling, gn_det.evaluation, gn_det.benchmark, gn_det.checkpoint\n"
            "from gn_det.config import get_cfg\nfrom gn_det.modeling import build_model\n"
            "cfg = get_cfg(); cfg.merge_from_list(['MODEL.DEVICE', 'meta'])\nbuild_model(cfg)\n"
            "assert not [m for m in sys.modules if m.startswith('detectron2') and sys.modules[m] is not None]\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
