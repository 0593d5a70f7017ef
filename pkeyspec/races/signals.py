"""Races: signals (being written)."""
