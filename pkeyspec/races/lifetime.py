"""Races: lifetime (being written)."""
