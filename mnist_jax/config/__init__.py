"""The config schema with its defaults (defaults.py) and the checks that refuse impossible values (validate.py)."""
