"""Sphinx configuration for the powerdrivers documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``):
warnings are errors. Tables of the model and the drivers' native-state tables
are generated from the code by the extension the package ships
(``powerdrivers.sphinxext``); ``_ext/powerdrivers_tables.py`` adds what only
this documentation needs.
"""

from __future__ import annotations

import sys
from inspect import signature
from pathlib import Path

import powerdrivers
from powerdrivers._tracking import OperationTracker

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

# -- Project -------------------------------------------------------------------

project = "powerdrivers"
author = "the powerdrivers authors"
project_copyright = "the powerdrivers authors, Apache-2.0"
release = powerdrivers.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "stevedore.sphinxext",
    "powerdrivers.sphinxext",
    "powerdrivers_tables",
    "powerdrivers_openapi",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
default_role = "code"
primary_domain = "py"
highlight_language = "none"
nitpicky = False

# Values the prose quotes, taken from the code rather than copied.
rst_epilog = f"""
.. |interface_version| replace:: ``{powerdrivers.INTERFACE_VERSION}``
.. |supported_range| replace:: ``{powerdrivers.SUPPORTED_INTERFACE_RANGE}``
.. |namespace| replace:: ``{powerdrivers.NAMESPACE}``
.. |grace_s| replace:: {signature(OperationTracker).parameters["grace_s"].default:g}
"""

# -- autodoc -------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
python_use_unqualified_type_names = True
add_module_names = False

# -- HTML ----------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"powerdrivers {release}"
html_static_path = ["_static"]
html_css_files = ["powerdrivers.css"]
html_theme_options = {
    "description": "One power-state model for every hypervisor",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "230px",
}
