"""``import manifold_scores`` stays light: the experiments load on first use."""

import subprocess
import sys


def test_experiments_load_lazily():
    code = (
        "import sys\n"
        "import manifold_scores as ms\n"
        "assert 'manifold_scores.experiments' not in sys.modules, 'imported eagerly'\n"
        "assert 'experiments' in dir(ms) and 'experiments' in ms.__all__\n"
        "assert 'E1' in ms.experiments.REGISTRY\n"
        "assert ms.experiments is sys.modules['manifold_scores.experiments']\n"
        "try:\n"
        "    ms.no_such_module\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_module' in str(e)\n"
        "else:\n"
        "    raise AssertionError('unknown attribute did not raise')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
