#!/usr/bin/env bash
# Build the documentation site into site/ in strict mode: any warning (a broken link or
# cross-reference, a page missing from the nav, a docstring griffe cannot parse) fails the build.
# Needs the docs extra: python -m pip install -e ".[docs]". Extra arguments go to mkdocs build
# (e.g. -d /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
# Material for MkDocs prints a banner about MkDocs 2.0 on every build; it is not a build warning.
export NO_MKDOCS_2_WARNING=1
exec python -m mkdocs build --strict --clean "$@"
