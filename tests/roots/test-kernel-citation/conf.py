extensions = ["myst_parser", "pkeyspec.sphinxext.kernel"]
