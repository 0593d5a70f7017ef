from pathlib import Path

import pkeyspec

extensions = ["myst_parser", "sphinx.ext.doctest", "pkeyspec.sphinxext.facts", "pkeyspec.sphinxext.races",
              "pkeyspec.sphinxext.conformance", "pkeyspec.sphinxext.guarantees"]
myst_enable_extensions = ["colon_fence"]
pkeyspec_facts_file = str(Path(pkeyspec.__file__).resolve().parents[1] / "docs" / "_data" / "facts.tsv")
# A scenario and one kernel's observation of it, beside this root.
pkeyspec_conformance_dir = "conformance"
pkeyspec_conformance_page = "index"
pkeyspec_properties_dir = "properties"
