"""What a run leaves on disk, kept safe: the run directory as training writes it
(workdir.py: the lock, resume checks, records), checksummed orbax checkpoints
(checkpoint.py), the one best-epoch rule (selection.py) and the one atomic writer
(writers.py); and JAX's persistent compilation cache (compile_cache.py). It imports
nothing of the engine, so whatever reads a run's files can."""
