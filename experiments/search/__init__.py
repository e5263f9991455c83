"""Sweeps and studies: search strategies and the wall-clock of a sweep."""
