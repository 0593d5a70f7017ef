"""Sphinx extensions of the pkeyspec site, one concern per module."""
