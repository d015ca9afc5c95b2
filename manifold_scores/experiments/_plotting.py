"""One figure style for every experiment's ``plot``: readable at the size a notebook shows it.

Every ``plot(table)`` builds its figure with :func:`subplots` (at least :data:`DPI` dots per
inch, fonts and legends sized to be read, log-axis ticks that do not overlap) and returns it
through :func:`finish`, which lays it out. :func:`style_problems` lists what a figure lacks
(axis labels, a legend where several lines are drawn, the resolution); the tests run it on every
figure that ``manifold-scores verify --plots`` would write.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from manifold_scores.experiments._plotting import finish, style_problems, subplots
    >>> fig, ax = subplots()
    >>> _ = ax.loglog([1e-3, 1e-2, 1e-1], [1.0, 0.1, 0.01], "o-", label="measured")
    >>> _ = ax.set(xlabel="sigma", ylabel="error")
    >>> _ = ax.legend()
    >>> style_problems(finish(fig))
    []
"""

from __future__ import annotations

DPI = 110

#: rc settings applied while a figure is built (a context: the user's own settings survive)
RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``plt.subplots`` under the shared style (``figsize`` defaults to 5 x 4 inches a panel)."""
    import matplotlib.pyplot as plt

    if figsize is None:
        figsize = (min(5.0 * ncols, 16.0), 4.0 * nrows)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, **kwargs)
    fig.set_dpi(max(fig.get_dpi(), DPI))
    return fig, axes


def finish(fig, title: str | None = None):
    """Title, tidy log ticks and lay out a figure built with :func:`subplots`; returns it."""
    from matplotlib import ticker

    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            loc = axis.get_major_locator()
            if scale == "log" and isinstance(loc, ticker.LogLocator) and \
                    getattr(loc, "_base", 10.0) == 10.0:
                # at most ~6 labelled decades; minor ticks unlabelled, so labels never overlap
                # (ticks set by hand, or another base, are left as they are)
                axis.set_major_locator(ticker.LogLocator(base=10, numticks=7))
                axis.set_minor_formatter(ticker.NullFormatter())
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def tile(images, cols: int, *, rows: int | None = None, shape=(8, 8), fill=float("nan")):
    """Flat images (``(n, h * w)`` or ``(n, h, w)``) laid out row by row on a ``rows x cols``
    grid for one ``imshow``, one pixel of ``fill`` between cells (and in empty cells).

    Example:
        >>> import numpy as np
        >>> tile(np.ones((3, 4)), 2, shape=(2, 2), fill=0.0).shape
        (5, 5)
    """
    import numpy as np

    h, w = shape
    imgs = np.asarray(images, float).reshape(-1, h, w)
    rows = -(-len(imgs) // cols) if rows is None else rows
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), fill)
    for i, im in enumerate(imgs[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = im
    return out


def style_problems(fig) -> list[str]:
    """What a figure lacks under the shared style (empty when it passes).

    Checked: resolution at least :data:`DPI`; every panel that draws data has x and y labels
    (its own, a panel's it shares the axis with, or the figure's ``supxlabel`` / ``supylabel``);
    a panel with several labelled artists has a legend inside the figure (or the figure has
    one).
    """
    problems = []
    if fig.get_dpi() < DPI:
        problems.append(f"dpi {fig.get_dpi():g} < {DPI}")
    fig_legend = bool(fig.legends)
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not (ax.lines or ax.collections or ax.patches or ax.images):
            continue
        if ax.images and not ax.lines and not ax.collections:
            continue  # an image panel (a sample grid) needs no axis labels
        if not _labelled(ax, "x", fig):
            problems.append(f"panel {i}: no x label")
        if not _labelled(ax, "y", fig):
            problems.append(f"panel {i}: no y label")
        labelled = [h for h in ax.get_legend_handles_labels()[1] if not h.startswith("_")]
        if len(labelled) >= 2 and ax.get_legend() is None and not fig_legend:
            problems.append(f"panel {i}: {len(labelled)} labelled artists and no legend")
    return problems


def _labelled(ax, which: str, fig) -> bool:
    get = "get_xlabel" if which == "x" else "get_ylabel"
    if getattr(ax, get)():
        return True
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    if any(getattr(other, get)() for other in shared.get_siblings(ax)):
        return True
    sup = getattr(fig, "_supxlabel" if which == "x" else "_supylabel", None)
    return bool(sup is not None and sup.get_text())
