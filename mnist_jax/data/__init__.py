"""Data: sources (IDX files, downloaded on first use; TFDS, the tfds extra), splits and
preprocessing, on-device augmentation.

Nothing is imported here so that ``mnist_jax.data.augment`` and
``mnist_jax.data.preprocess`` stay importable without the sources' packages.
"""
