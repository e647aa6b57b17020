"""Sphinx configuration for the event_pipeline documentation.

Build with ``sphinx-build -W -b html docs <out>``; the build must stay free of warnings.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes

_ROOT = Path(__file__).resolve().parent.parent

# Document the source tree itself, so the docs build works from a plain clone without an
# editable install (and never documents a stale installed copy).
sys.path.insert(0, str(_ROOT / "src"))


def _version() -> str:
    match = re.search(
        r'^version\s*=\s*"([^"]+)"', (_ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )
    return match.group(1) if match else "unknown"


# -- Project -----------------------------------------------------------------------------

project = "event_pipeline"
author = "event_pipeline contributors"
copyright = "event_pipeline contributors"
release = _version()
version = release

# -- General -----------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

# benchmarks.md is written by ``python benchmarks/run.py`` and shown through a
# literalinclude in benchmarks.rst; Markdown is never parsed as a page of its own.
exclude_patterns = ["_build", "**/*.md", "Thumbs.db", ".DS_Store"]

# Literal blocks written with a bare ``::`` are shown as plain text: every Python example
# must be an explicit ``.. code-block:: python``, because those are the ones the test suite
# (tests/test_docs_examples.py) executes.
highlight_language = "text"
pygments_style = "sphinx"

# -- Autodoc and Napoleon (Google-style docstrings) ------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
add_module_names = False
python_use_unqualified_type_names = True
# ``Literal[X]`` shown as ``X``; with the hook below, the "unset" sentinel's annotation
# (``int | Literal[_Empty.EMPTY]``) reads as its public name: ``int | EMPTY``.
python_display_short_literal_types = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
# An ``Attributes:`` section becomes a field list rather than separate attribute entries,
# so it never duplicates a member that autodoc documents as well.
napoleon_use_ivar = True

# -- HTML --------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"event_pipeline {release}"
html_show_sourcelink = False


# -- Hooks -------------------------------------------------------------------------------


def _public_sentinel_name(app: object, doctree: Any) -> None:
    """Show the sentinel's private enum spelling in signatures as ``EMPTY``."""
    for signature in doctree.findall(addnodes.desc_signature):
        for text in list(signature.findall(nodes.Text)):
            if "_Empty.EMPTY" in text:
                text.parent.replace(text, nodes.Text(text.replace("_Empty.EMPTY", "EMPTY")))


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-read", _public_sentinel_name)
    return {"parallel_read_safe": True}
