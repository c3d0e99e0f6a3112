"""The run machinery every stage shares: runtime (device, precision, threads), the resume-and-checkpoint
training skeleton, atomic checkpoints, metrics logs, paths of a run's artifacts, stage times, CMA-ES."""
