"""A model bound to its parameters: a callable PyTree that samplers take as a score.

Every model module provides ``init(key, ...) -> params`` and ``apply(params, x, t) ->
prediction`` on one point ``x`` of shape ``(d,)``; the prediction is in the parameterisation
``params.target`` (``"score"``, ``"eps"``, ``"x0"`` or ``"v"``). :func:`bind` wraps both into a
:class:`Bound` model whose leaves are the parameters and whose ``apply`` function and process are
static, so ``jax.jit`` (and the samplers) see a new parameter value as new data of the same
structure: sampling after every training step reuses one compiled program.

Example:
    >>> import jax, manifold_scores as ms
    >>> from manifold_scores.models import mlp
    >>> params = mlp.init(jax.random.key(0), dim=3, process=ms.VP(), width=8, depth=1)
    >>> score = ms.models.bind(mlp.apply, params, ms.VP())
    >>> score(jax.numpy.ones(3), 0.5).shape
    (3,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _resolve_target
from manifold_scores.scores import convert

__all__ = ["Bound", "bind"]


@pytree_dataclass
class Bound:
    """``apply`` bound to ``params``; calling it returns the *score* at ``(x, t)``.

    Attributes:
        params: the parameters (the PyTree leaves).
        apply: ``apply(params, x, t) -> prediction`` (static; a module-level function, so that
            two bound models of the same kind share a jit cache entry).
        process: the process that turns ``t`` into ``(alpha, sigma)`` for the conversion of
            non-score predictions (static; hashable frozen dataclass).
        target: the parameterisation ``apply`` predicts (static).
    """

    params: Any
    apply: Callable = static_field()
    process: Any = static_field(default=None)
    target: str = static_field(default="score")

    def __call__(self, x, t):
        pred = self.apply(self.params, x, t)
        if self.target == "score":
            return pred
        return convert(pred, x, self.process.alpha(t), self.process.sigma(t),
                       source=self.target, target="score")

    def predict(self, x, t):
        """The raw prediction in the model's own parameterisation."""
        return self.apply(self.params, x, t)


def bind(apply: Callable, params: Any, process=None, target: str | None = None) -> Bound:
    """Bind ``apply`` to ``params``; ``target`` defaults to ``params.target`` (else ``"score"``).

    A ``target`` that contradicts ``params.target`` is a ``ValueError`` (the bound model would
    convert the prediction from the wrong parameterisation). ``process`` is needed when the
    target is not the score (and is taken from ``params.process`` when the parameters carry
    one).
    """
    target = _resolve_target(params, target)
    if process is None:
        process = getattr(params, "process", None)
    if target != "score" and process is None:
        raise ValueError(f"a model predicting {target!r} needs a process to return scores")
    return Bound(params, apply, process, target)


__dir__ = _public_dir(__all__)
