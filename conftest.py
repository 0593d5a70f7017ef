"""Root conftest: keep pytest (and --doctest-modules) away from Sphinx's conf.py,
and load Sphinx's test fixtures (used by tests/test_sphinxext.py)."""

collect_ignore = ["conf.py"]
pytest_plugins = ("sphinx.testing.fixtures",)
