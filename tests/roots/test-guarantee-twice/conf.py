from pathlib import Path

import pkeyspec

extensions = ["myst_parser", "sphinx.ext.doctest", "pkeyspec.sphinxext.facts", "pkeyspec.sphinxext.races",
              "pkeyspec.sphinxext.guarantees"]
myst_enable_extensions = ["colon_fence"]
# The project's own catalogue (this root is copied elsewhere before the build).
pkeyspec_facts_file = str(Path(pkeyspec.__file__).resolve().parents[1] / "docs" / "_data" / "facts.tsv")
# This root's own properties.
pkeyspec_properties_dir = "properties"

