"""Sphinx configuration of the hinge_sc documentation (scverse cookiecutter conventions).

Build: ``sphinx-build -W -b html docs docs/_build/html`` after ``pip install -e ".[doc]"``.

Intersphinx is off by default: the inventories of anndata, scanpy, … are fetched over the network at build time,
and CI (and many clusters) can only reach the package registries, where a failed fetch is a warning and ``-W``
would turn it into an error. Set ``HINGE_SC_DOCS_INTERSPHINX=1`` to link names such as :class:`anndata.AnnData`
to their projects' pages. Without it, those names render as code, unlinked; Sphinx does not warn about
unresolved Python references unless ``nitpicky`` is on, which it is not.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))  # document the checkout, also when hinge_sc is not installed

info = metadata("hinge_sc")
project = info["Name"]
author = info["Author"] or "hinge_sc developers"
copyright = f"{datetime.now():%Y}, {author}"  # noqa: A001
version = info["Version"]
release = version

extensions = [
    "myst_nb",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinxcontrib.bibtex",
]

templates_path = ["_templates"]
html_static_path = ["_static"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}
master_doc = "index"
default_role = "literal"
pygments_style = "default"

# --- API pages from the docstrings ---------------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options: dict[str, bool] = {}  # members get their own pages (_templates/autosummary/class.rst)
autodoc_typehints = "none"  # the numpydoc sections state types, shapes and units; signatures stay short
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_use_ivar = True  # "Attributes" sections as fields: the attributes also get their own autosummary pages
napoleon_custom_sections = [("Params", "Parameters")]

# --- bibliography ----------------------------------------------------------------------------------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

# --- MyST and notebooks ----------------------------------------------------------------------------------------------
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image", "html_admonition"]
myst_heading_anchors = 3
myst_url_schemes = ("http", "https", "mailto")
nb_execution_mode = "off"  # tutorials render from their committed outputs (tests/test_tutorials.py runs them)
nb_merge_streams = True
nb_output_stderr = "remove"

# --- cross-references to other projects (opt-in, see the module docstring) -----------------------------------------
intersphinx_mapping = {}
if os.environ.get("HINGE_SC_DOCS_INTERSPHINX", "").strip().lower() in ("1", "true", "yes", "on"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "squidpy": ("https://squidpy.readthedocs.io/en/stable/", None),
        "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable/", None),
    }

# --- HTML ------------------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"navigation_with_keys": False}
html_show_sphinx = False
