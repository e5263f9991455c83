"""Other datasets as IDX files."""
