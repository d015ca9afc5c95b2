"""MkDocs hooks: the pages generated at build time, so that they stay true.

* ``api/<module>.md``: one API page per public module of ``manifold_scores`` (every module and
  package whose name has no leading underscore), found by walking the package on disk, so a new
  module appears without editing anything here. Each page is a mkdocstrings ``:::`` block; the
  content comes from the docstrings. A package's page renders the names it defines itself (or
  takes from a private module) and links the ones it re-exports from public modules.
* ``notebooks/*.ipynb``: the committed notebooks (rendered by mkdocs-jupyter with their stored
  outputs, never executed) and ``notebooks/index.md`` from ``notebooks/README.md``.
* ``benchmarks.md``: the tables of ``benchmarks/results/*.json``, rendered with the same code
  that writes ``benchmarks/results/*.md``.

The nav sections titled "API reference" and "Notebooks" in ``mkdocs.yml`` are filled here.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import griffe
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "manifold_scores"
API_TITLE = "API reference"
NOTEBOOKS_TITLE = "Notebooks"


# --------------------------------------------------------------------------------------------
# API pages


def public_modules() -> list[tuple[str, bool]]:
    """``(dotted name, is_package)`` for every public module, in a stable order."""
    found = []

    def walk(directory: Path, prefix: str):
        found.append((prefix, True))
        for path in sorted(directory.iterdir()):
            if path.name.startswith("_"):
                continue
            if path.is_dir() and (path / "__init__.py").exists():
                walk(path, f"{prefix}.{path.name}")
            elif path.suffix == ".py":
                found.append((f"{prefix}.{path.stem}", False))

    walk(ROOT / PACKAGE, PACKAGE)
    return found


def _private(path: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in path.split("."))


def _first_line(obj) -> str:
    doc = obj.docstring.value if obj.docstring else ""
    line = doc.strip().split("\n\n", 1)[0].replace("\n", " ")
    # Sphinx roles are rewritten by the griffe extension inside mkdocstrings only: keep code.
    line = re.sub(r":[a-z:]+:`~?([^`]+)`", r"`\1`", line)
    return line.replace("|", "\\|")


def _package_page(name: str, pkg, documented: set[str]) -> str:
    """A package's page: its docstring and its own members, then links to its re-exports."""
    own, links = [], []
    exported = pkg.exports if pkg.exports is not None else [
        n for n in pkg.members if not n.startswith("_")]
    for member_name in exported:
        member_name = str(member_name)
        member = pkg.members.get(member_name)
        if member is None:
            continue
        if isinstance(member, griffe.Alias):
            try:
                target = member.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            if target.is_module:
                if target.path in documented:
                    links.append((member_name, target.path, target))
                continue
            if not target.path.startswith(PACKAGE + "."):
                continue
            if _private(target.path):
                own.append(member_name)
            else:
                links.append((member_name, target.path, target))
        else:
            own.append(member_name)
    members = "false" if not own else "[" + ", ".join(own) + "]"
    lines = [f"::: {name}", "    options:", f"      members: {members}", ""]
    if links:
        lines += ["## Exported from other modules", "",
                  f"`{name}` re-exports these names; each is documented where it is defined.",
                  "", "| name | defined in | summary |", "|---|---|---|"]
        for member_name, path, target in links:
            home = path if target.is_module else path.rsplit(".", 1)[0]
            lines.append(f"| [`{member_name}`][{path}] | [`{home}`][{home}] | "
                         f"{_first_line(target)} |")
        lines.append("")
    return "\n".join(lines)


def api_pages() -> dict[str, str]:
    """``{src_uri: markdown}`` for the API section, the overview included."""
    modules = public_modules()
    documented = {name for name, _ in modules}
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    root = loader.load(PACKAGE)
    loader.resolve_aliases(implicit=False, external=False)
    pages = {}
    overview = ["# API reference", "",
                "Generated from the docstrings (Google style) of every public module; the "
                "examples are the ones `pytest --doctest-modules` runs. Packages list what they "
                "re-export and link each name to the module that defines it.", "",
                "| module | summary |", "|---|---|"]
    for name, is_package in modules:
        obj = root if name == PACKAGE else root.get_member(name[len(PACKAGE) + 1:])
        body = _package_page(name, obj, documented) if is_package else f"::: {name}\n"
        pages[f"api/{name}.md"] = body
        overview.append(f"| [`{name}`]({name}.md) | {_first_line(obj)} |")
    pages["api/index.md"] = "\n".join(overview) + "\n"
    return pages


def api_nav() -> list:
    """Nav entries: the overview, the top-level module, then one entry (or section) per
    first-level module, in the order of the files on disk."""
    nav: list = [{"Overview": "api/index.md"}]
    groups: dict[str, list] = {}
    for name, _ in public_modules():
        parts = name.split(".")
        if len(parts) == 1:
            nav.append({name: f"api/{name}.md"})
            continue
        groups.setdefault(parts[1], []).append({".".join(parts[1:]): f"api/{name}.md"})
    for group, entries in groups.items():
        nav.append(entries[0] if len(entries) == 1 else {group: entries})
    return nav


# --------------------------------------------------------------------------------------------
# Notebooks


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebooks_index() -> str:
    text = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
    names = {p.name for p in notebooks()}

    def link(m: re.Match) -> str:
        return f"[`{m.group(1)}`]({m.group(1)})" if m.group(1) in names else m.group(0)

    text = re.sub(r"`([A-Za-z0-9_]+\.ipynb)`", link, text)
    note = ("These pages show the notebooks as committed, with the outputs of a full-size run; "
            "building the site does not execute them.\n\n")
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{note}{rest.lstrip()}"


def notebooks_nav() -> list:
    nav: list = [{"Overview": "notebooks/index.md"}]
    for path in notebooks():
        nav.append({path.stem: f"notebooks/{path.name}"})
    return nav


# --------------------------------------------------------------------------------------------
# Benchmarks


def _demote(markdown: str, levels: int = 1) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown,
                  flags=re.M)


def benchmarks_page() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import report  # the code that writes benchmarks/results/*.md

    results = ROOT / "benchmarks" / "results"
    out = ["# Benchmarks", "",
           "Generated when the site is built from the JSON files in `benchmarks/results/`, "
           "written by `python -m benchmarks` (`pip install -e \".[bench]\"`). Every file "
           "records its device, library versions, dtype, shapes and the machine's load; "
           "times are medians after compilation, and ratios against the baselines come from "
           "alternating rounds in one process. Only CPU results are committed so far: run "
           "`python -m benchmarks` on a GPU and commit the JSON to add them.", ""]
    for stem in ("bench_full", "bench_quick"):
        path = results / f"{stem}.json"
        if path.exists():
            out += [_demote(report.markdown(json.loads(path.read_text())), 1), ""]
    path = results / "training_loop_cpu.json"
    if path.exists():
        loop = json.loads(path.read_text())
        env = loop["environment"]
        out += ["## Training loop", "",
                f"`{path.name}`: device `{env['device']}` ({env['cpu_count']} CPU cores), "
                f"{env['dtype']}, jax {env['jax']}; load average at start "
                f"{', '.join(f'{x:.2f}' for x in env['loadavg'])}; {env['time']}; size "
                f"{loop['size']}. The reference row is `fit`; ratios are the baseline's time "
                "per step over `fit`'s.", ""]
        out += report._timing_table(loop["results"]) + [""]
    path = results / "ism_scale_cpu.json"
    if path.exists():
        ism = json.loads(path.read_text())
        env = ism["environment"]
        shape = ", ".join(f"{k} = {v}" for k, v in ism["shape"].items())
        out += ["## ISM step at scale", "",
                f"`{path.name}` (`python -m benchmarks.ism_scale`): {ism['case']}, {shape}; "
                f"device `{env['device']}` ({env['cpu_count']} CPU cores), {env['dtype']}, "
                f"load average {', '.join(f'{x:.2f}' for x in env['loadavg'])}, {env['time']}.",
                "", "| compile s | step s (median) | XLA temporaries MiB | peak RSS MiB | "
                "parameters MiB |", "|---:|---:|---:|---:|---:|",
                f"| {ism['compile_s']:.3g} | {ism['step_s_median']:.3g} | "
                f"{ism['xla_temp_mib']:.4g} | {ism['peak_rss_mib']:.5g} | "
                f"{ism['params_mib']:.3g} |", ""]
    path = results / "float32_accuracy.json"
    if path.exists():
        from benchmarks import float32_accuracy

        out += ["## Float32 accuracy of the exact scores", "",
                _demote(float32_accuracy.markdown(json.loads(path.read_text())), 2), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# MkDocs events


def _fill(nav: list, title: str, children: list) -> bool:
    for i, item in enumerate(nav):
        if isinstance(item, dict) and title in item:
            nav[i] = {title: children}
            return True
    return False


def on_config(config, **kwargs):
    nav = config["nav"]
    for title, children in ((API_TITLE, api_nav()), (NOTEBOOKS_TITLE, notebooks_nav())):
        if not _fill(nav, title, children):
            raise ValueError(f"mkdocs.yml: the nav needs a section titled {title!r} "
                             "(docs/hooks.py fills it)")
    return config


@event_priority(100)  # before mkdocs-jupyter looks for notebooks among the files
def on_files(files, config, **kwargs):
    for uri, content in api_pages().items():
        files.append(File.generated(config, uri, content=content))
    files.append(File.generated(config, "notebooks/index.md", content=notebooks_index()))
    for path in notebooks():
        # A real file whose source directory is the repository root (not a generated one:
        # mkdocs-jupyter reads the notebook from its path).
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    files.append(File.generated(config, "benchmarks.md", content=benchmarks_page()))
    return files
