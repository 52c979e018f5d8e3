"""Every script in tools/ and benchmarks/ imports the gn_det of the checkout it lives in, not whichever
gn_det comes first on the path: an editable install that points at another checkout (or none at all)
must neither break ``python tools/train_net.py`` nor run another tree's code. The test puts a decoy
gn_det first on the path and loads each script's top level (its imports) in one subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(str(p) for folder in ("tools", "benchmarks") for p in (REPO / folder).glob("*.py")
                 if any(line.startswith(("from gn_det", "import gn_det")) for line in p.read_text().splitlines()))

_LOAD_EACH = textwrap.dedent("""
    import json, runpy, sys
    base_path = list(sys.path)
    report = {}
    for script in sys.argv[1:]:
        sys.path[:] = base_path
        for name in [m for m in sys.modules if m == "gn_det" or m.startswith("gn_det.")]:
            del sys.modules[name]
        try:
            runpy.run_path(script, run_name="loaded_by_test")
        except ImportError as exc:
            if exc.name and not exc.name.startswith("gn_det") and "decoy" not in str(exc):
                report[script] = "skip: " + str(exc)   # an optional dependency (detectron2) is absent
                continue
            report[script] = "error: " + str(exc)
            continue
        module = sys.modules.get("gn_det")
        report[script] = getattr(module, "__file__", None) if module is not None else "not imported"
    print(json.dumps(report))
""")


def test_each_script_imports_the_gn_det_of_its_checkout(tmp_path):
    decoy = tmp_path / "decoy" / "gn_det"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text('raise ImportError("the decoy gn_det was imported")\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "decoy"))
    out = subprocess.run([sys.executable, "-c", _LOAD_EACH, *SCRIPTS], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == set(SCRIPTS)
    checked = {s: f for s, f in report.items() if not f.startswith("skip: ")}
    assert len(checked) >= len(SCRIPTS) - 1, report
    expected = str(REPO / "gn_det" / "__init__.py")
    wrong = {os.path.relpath(s, REPO): f for s, f in checked.items() if f != expected}
    assert not wrong, f"scripts that did not import {expected}: {wrong}"
