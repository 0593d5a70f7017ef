"""Races: exec_only (being written)."""
