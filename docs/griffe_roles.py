"""Griffe extension: Sphinx roles in the docstrings become mkdocstrings cross-references.

The docstrings are Google style but name other objects with Sphinx roles
(``:func:`~manifold_scores.sampling.grids.time_grid```, ``:class:`Table```). This extension,
loaded by mkdocstrings (``extensions:`` in ``mkdocs.yml``), rewrites each role once the whole
package is loaded:

* a target inside ``manifold_scores`` (absolute, or relative to the object's scope: the object,
  its class, its module and the packages above it) becomes an autorefs link
  ``[`text`][full.path]``, which ``mkdocs build --strict`` checks like any other link;
* a target outside the package (``jax.vmap``, ``optax.adam``) becomes inline code;
* ``Example:`` and ``Example (what it shows):`` become ``Examples:``, the section griffe renders
  as code (it reads a singular "Example:" as an admonition, where ``>>>`` would be a quote);
* a target that names ``manifold_scores`` but is not found, or a relative name found nowhere,
  is reported as a warning, which fails the strict build (a broken reference).

``~`` shows the last component only, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PACKAGE = "manifold_scores"
# "Example:" (and "Example (what it shows):") open an examples section, like "Examples:".
EXAMPLE = re.compile(r"^(?P<indent>[ \t]*)Examples?(?: \((?P<what>.*)\))?:[ \t]*$", re.M)
ROLE = re.compile(r":(?:py:)?(mod|func|class|meth|attr|data|exc|obj|const):`(~?)([^`<>]+?)`")
# Names outside the package that docstrings may mention; shown as code, never linked.
EXTERNAL = ("jax", "jnp", "np", "numpy", "optax", "flax", "equinox", "eqx", "diffrax", "scipy",
            "chex", "matplotlib", "torch", "sklearn", "builtins", "typing", "collections")

logger = griffe.logger


def _lookup(collection, path: str):
    try:
        return collection.get_member(path) if hasattr(collection, "get_member") else \
            collection[path]
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError,
            griffe.CyclicAliasError):
        return None


def _private(path: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__")
               for part in path.split("."))


def _canonical(found) -> str | None:
    """The path under which the object is rendered: the defining module when it is public,
    else the public alias that exports it."""
    if isinstance(found, griffe.Alias):
        try:
            target = found.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        if not target.path.startswith(PACKAGE + "."):
            return None  # re-export of a third-party object: not documented here
        return found.path if _private(target.path) else target.path
    return None if _private(found.path) else found.path


def _scopes(obj) -> list[str]:
    scopes, cur = [], obj
    while cur is not None:
        scopes.append(cur.path)
        cur = cur.parent
    return scopes


def _rewrite(text: str, obj, collection) -> str:
    def repl(m: re.Match) -> str:
        role, tilde, target = m.group(1), m.group(2), m.group(3).strip()
        target = target.rstrip("()")
        bare = target.lstrip(".")
        shown = bare.rsplit(".", 1)[-1] if tilde else bare
        if role in ("func", "meth"):
            shown += "()"
        if bare.split(".", 1)[0] in EXTERNAL:
            return f"`{shown}`"
        candidates = [bare] if bare.startswith(PACKAGE) else [
            f"{scope}.{bare}" for scope in _scopes(obj)] + [f"{PACKAGE}.{bare}"]
        for path in candidates:
            found = _lookup(collection, path)
            if found is not None:
                canonical = _canonical(found)
                if canonical is None:
                    return f"`{shown}`"
                return f"[`{shown}`][{canonical}]"
        logger.warning("%s: cross-reference :%s:`%s` does not resolve", obj.path, role,
                       m.group(3))
        return f"`{shown}`"

    return ROLE.sub(repl, text)


def _examples(text: str) -> str:
    def repl(m: re.Match) -> str:
        head = f"{m.group('indent')}Examples:"
        if m.group("what"):
            head += f"\n{m.group('indent')}    {m.group('what')}:\n"
        return head

    return EXAMPLE.sub(repl, text)


def _walk(obj, seen: set[str]):
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Alias):
            continue
        yield from _walk(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader,
                   **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        collection = loader.modules_collection
        for obj in _walk(pkg, set()):
            if obj.docstring is not None and ":" in obj.docstring.value:
                text = _examples(obj.docstring.value)
                obj.docstring.value = _rewrite(text, obj, collection)
