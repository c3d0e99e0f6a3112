"""Worker pools for the work that scales with env steps: processes on this machine or Ray actors,
behind one contract (``map`` yields results in item order; a dead worker raises ``WorkerError``)."""
