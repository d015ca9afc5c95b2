"""The von Mises-Fisher normaliser and the Bessel ratio against scipy's scaled Bessel functions.

``log S_nu(K) = log Gamma(nu + 1) + nu log(2/K) + log ive(nu, K) + K`` and
``A(K) = ive(nu + 1, K) / ive(nu, K)`` from ``scipy.special.ive`` (float64), over orders
``nu = 0 .. 31`` (spheres ``S^1`` to ``S^63``) and arguments ``K = 1e-6 .. 1e6`` (both branches of
the implementation: the power series below the threshold, Hankel's expansion above it).
The reference is evaluated at the exact argument the implementation saw (``sqrt`` of the
float32 ``K^2`` in float32 runs).

The defect ``1 - A`` is checked two ways: against ``1 - A_ref`` with an absolute tolerance (the
reference itself cancels: about ``eps`` absolute), and relative to its size where the reference
still has digits (``K <= 1e3``, float64; every ``K`` in float32, whose own error is far larger).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special as sps

from manifold_scores.densities.manifolds import _special

TWO_NU = (0, 1, 2, 3, 5, 8, 13, 30, 62)
K = np.concatenate([[0.0], np.geomspace(1e-6, 1e6, 97)])
# Tolerances, about 3x the worst errors measured (float64: log S 2e-13, A 7e-14; float32:
# log S 7e-7, A 1.5e-7, defect 2.5e-6 relative).
TOL = {
    "float64": {"log_s": 1e-12, "a": 3e-13, "defect_abs": 5e-15, "defect_rel": 1e-10},
    "float32": {"log_s": 3e-6, "a": 1e-6, "defect_abs": 5e-7, "defect_rel": 1e-5},
}


def _reference(two_nu, k):
    """``(log S_nu(K), A(K))`` in float64 from scipy; ``K = 0`` gives ``(0, 0)``."""
    nu = two_nu / 2.0
    pos = k > 0
    kp = np.where(pos, k, 1.0)
    log_s = math.lgamma(nu + 1.0) + nu * np.log(2.0 / kp) + np.log(sps.ive(nu, kp)) + kp
    a = sps.ive(nu + 1.0, kp) / sps.ive(nu, kp)
    return np.where(pos, log_s, 0.0), np.where(pos, a, 0.0)


@jax.jit
def _evaluate(w_sq_by_order):
    """All orders in one compilation: ``(log S, A, 1 - A)`` per order."""
    out = []
    for two_nu, w_sq in zip(TWO_NU, w_sq_by_order, strict=True):
        a, defect = _special.mean_resultant_length(two_nu, w_sq)
        out.append((_special.log_vmf_normaliser(two_nu, w_sq), a, defect))
    return out


def test_normaliser_and_ratio_match_scipy(dtype):
    tol = TOL[dtype]
    w_sq = jnp.asarray(K * K, dtype)
    k = np.sqrt(np.asarray(w_sq, np.float64))  # the argument the implementation saw
    results = _evaluate([w_sq] * len(TWO_NU))
    for two_nu, (log_s, a, defect) in zip(TWO_NU, results, strict=True):
        assert log_s.dtype == jnp.dtype(dtype) and a.dtype == jnp.dtype(dtype)
        log_s, a, defect = (np.asarray(v, np.float64) for v in (log_s, a, defect))
        ref_log_s, ref_a = _reference(two_nu, k)
        what = f"two_nu={two_nu} {dtype}"
        err = np.abs(log_s - ref_log_s) / np.maximum(1.0, np.abs(ref_log_s))
        assert np.max(err) <= tol["log_s"], (what, "log S", np.max(err), k[np.argmax(err)])
        pos = k > 0
        err = np.abs(a - ref_a)[pos] / ref_a[pos]
        assert np.max(err) <= tol["a"], (what, "A", np.max(err), k[pos][np.argmax(err)])
        assert a[0] == 0.0 and log_s[0] == 0.0  # K = 0: A = 0, S = 1
        ref_defect = 1.0 - ref_a
        err = np.max(np.abs(defect - ref_defect))
        assert err <= tol["defect_abs"], (what, "1 - A absolute", err)
        rel = (k >= 10.0) & (k <= (1e3 if dtype == "float64" else np.inf))
        err = np.abs(defect - ref_defect)[rel] / ref_defect[rel]
        assert np.max(err) <= tol["defect_rel"], (what, "1 - A relative", np.max(err))


def test_defect_keeps_relative_precision_at_huge_kappa(x64):
    """``1 - A(K) = (k - 1)/(2K) + (k - 1)(3 - k)/(8K^2) + O(K^-3)``, where ``A`` rounds to one."""
    k_arg = np.geomspace(1e7, 1e12, 6)
    defects = jax.jit(lambda w: [_special.mean_resultant_length(two_nu, w)[1]
                                 for two_nu in (0, 1, 8)])(jnp.asarray(k_arg**2))
    for two_nu, defect in zip((0, 1, 8), defects, strict=True):
        dim = two_nu + 2
        series = (dim - 1) / (2 * k_arg) + (dim - 1) * (3 - dim) / (8 * k_arg**2)
        np.testing.assert_allclose(np.asarray(defect), series, rtol=1e-12)


@jax.jit
def _grad_and_ratio(k_arg):
    out = []
    for two_nu in (0, 3, 30):
        grad = jax.vmap(jax.grad(lambda k, n=two_nu: _special.log_vmf_normaliser(n, k * k)))
        k = k_arg[two_nu]
        out.append((grad(k), _special.mean_resultant_length(two_nu, k * k)[0],
                    _special.log_vmf_normaliser(two_nu, k * k)))
    return out


def test_derivative_of_log_normaliser_is_the_ratio(x64):
    """``d log S_nu / dK = A(K)`` on both branches and across the threshold ``T``."""
    args = {}
    for two_nu in (0, 3, 30):
        thr = _special.bessel_table(two_nu).threshold
        args[two_nu] = jnp.asarray(np.concatenate(
            [np.geomspace(1e-3, 1e4, 15), thr * np.array([1 - 1e-12, 1 + 1e-12])]))
    for two_nu, (grad, a, log_s) in zip((0, 3, 30), _grad_and_ratio(args), strict=True):
        np.testing.assert_allclose(np.asarray(grad), np.asarray(a), rtol=1e-12)
        # the branches meet at T: the jump in log S is the slope times the step in K
        k_below, k_above = np.asarray(args[two_nu][-2:])
        jump = float(log_s[-1] - log_s[-2]) - float(a[-1]) * (k_above - k_below)
        assert abs(jump) < 1e-13 * abs(float(log_s[-1])), (two_nu, jump)
