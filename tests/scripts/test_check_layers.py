#!/usr/bin/python3
"""scripts/check_layers.py: passes on the repository, and catches an include against the layer
order in a planted tree (so the check cannot pass by looking at nothing)."""
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CHECK = ROOT / "scripts" / "check_layers.py"


def run(repo):
    p = subprocess.run([sys.executable, str(CHECK), str(repo)], capture_output=True, text=True)
    return p.returncode, p.stdout


def main():
    rc, out = run(ROOT)
    assert rc == 0, out
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for folder, text in {"core/tensor.h": '#include "core/dtype.h"\n',
                             "layers/x.cpp": '#include "autograd/variable.h"\n#include "core/io.h"\n',
                             "data/loader.cpp": '#include "layers/transformer.h"\n',
                             "kernels/ops.cpp": '  #  include "train/config.h"\n'}.items():
            (d / folder).parent.mkdir(parents=True, exist_ok=True)
            (d / folder).write_text(text)
        rc, out = run(d)
        assert rc == 1, out
        assert "data/loader.cpp:1: data/ includes layers/" in out, out
        assert "kernels/ops.cpp:1: kernels/ includes train/" in out, out
        assert "layers/x.cpp" not in out and "core/tensor.h" not in out, out
    print("test_check_layers: ok")


if __name__ == "__main__":
    main()
