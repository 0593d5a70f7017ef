"""Root conftest: keep pytest (and --doctest-modules) away from Sphinx's conf.py."""

collect_ignore = ["conf.py"]
