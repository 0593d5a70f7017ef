"""Races: mm (being written)."""
