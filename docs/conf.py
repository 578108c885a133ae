"""Sphinx configuration of the jacgeom documentation.

Build: ``pip install ".[docs]"`` then ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import jacgeom

project = "jacgeom"
author = "the jacgeom developers"
copyright = "2026, the jacgeom developers"
version = jacgeom.__version__
release = jacgeom.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ and $$...$$ for mathematics, ::: fences for directives, anchors for ## headings.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc / autosummary: one page per public object, generated at build time.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # the numpydoc type fields carry the shapes

# numpydoc: the docstrings list their parameters; dataclass fields are documented in the
# class docstring, so no automatic member tables (they would repeat every field).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# The examples run in the test suite: the pages' ```python blocks in tests/test_docs.py, the
# docstrings' examples in tests/test_doctests.py (with each module's globals, as doctest.testmod
# runs them).

html_theme = "pydata_sphinx_theme"
html_title = f"jacgeom {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "changelog": [], "benchmarks": []}


# The docstrings write absolute values and norms in plain text (|det R|, ||A||_F), which
# reStructuredText would read as substitution references. Escape the bars in prose lines;
# doctest lines and table borders are left alone.
def _escape_bars(app, what, name, obj, options, lines):  # noqa: ARG001
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith((">>>", "...", "+-", "+=")) or "|" not in line:
            continue
        lines[i] = line.replace("\\|", "|").replace("|", "\\|")


def setup(app):  # noqa: ANN001, ANN201
    app.connect("autodoc-process-docstring", _escape_bars, priority=400)
