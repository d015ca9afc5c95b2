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


# Modules whose dir() is their API; packages list their submodules too, and the experiment
# modules are checked with the registry.
PUBLIC_MODULES = [
    "metrics", "training", "likelihood", "processes", "testing", "scores", "losses",
    "densities.empirical", "densities.molrg", "densities.base", "densities.manifolds.tori",
    "densities.manifolds.spheres", "densities.manifolds.curves", "densities.manifolds.parametric",
    "models.base", "models.mlp", "models.lowrank", "mixtures.stats", "mixtures.isotropic",
    "mixtures.lowrank", "mixtures.sharded", "sampling.diffrax_bridge", "sampling.solver",
    "sampling.langevin", "sampling.samplers", "sampling.grids", "sampling.sde", "sampling.ode",
]


def test_dir_of_a_public_module_is_its_api():
    import importlib

    for name in PUBLIC_MODULES:
        mod = importlib.import_module(f"manifold_scores.{name}")
        assert dir(mod) == sorted(mod.__all__), name
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"{name}.__all__ names what it lacks: {missing}"
        leaked = [n for n in mod.__all__ if n in ("jax", "jnp", "np", "os", "optax")]
        assert not leaked, f"{name}.__all__ exports modules: {leaked}"
