"""Each theory claim as a function returning a table (used by notebooks, the CLI and tests).

Every experiment registers ``run(size="quick" | "full", *, seed=0) -> Table`` and
``plot(table) -> Figure`` and earns its verdicts through the study protocol
(:mod:`~manifold_scores.experiments.protocol`: seeds, null references, controls, certificates);
``quick`` runs in seconds to a minute or two on 2 CPU cores, ``full`` is what the notebooks
show. :data:`REGISTRY` maps ids (``"core"``, ``"E1"``, ...) to experiments, in the
order ``manifold-scores verify`` runs them. To add one: a module defining ``run`` and ``plot``
that calls :func:`register`, plus its import line below.

Example:
    >>> import manifold_scores as ms
    >>> "E1" in ms.experiments.REGISTRY
    True
"""

# Import order is registration order, the CLI's running order.
from manifold_scores.experiments import (
    core,
    e1_geometry,
    e2_error_tolerance,
    e3_tempered,
    e4_inverse,
    e5_subspace_recovery,
    e6_jacobian_rank,
    e7_generalisation,
    e8_random_features,
    e9_wpo_kernel,
    protocol,
    r1_lowrank,
    r2_digits_memorisation,
    r3_kernel_cost,
)
from manifold_scores.experiments._registry import (
    REGISTRY,
    Experiment,
    Review,
    get,
    plot,
    register,
    review,
    run,
)
from manifold_scores.experiments._table import SIZES, Row, Table, format_rows

__all__ = ["REGISTRY", "SIZES", "Experiment", "Review", "Row", "Table", "format_rows", "get",
           "plot", "protocol", "register", "review", "run", "core", "e1_geometry",
           "e2_error_tolerance", "e3_tempered", "e4_inverse", "e5_subspace_recovery",
           "e6_jacobian_rank",
           "e7_generalisation", "e8_random_features", "e9_wpo_kernel", "r1_lowrank",
           "r2_digits_memorisation", "r3_kernel_cost"]
