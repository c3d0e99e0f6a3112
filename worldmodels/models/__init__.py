"""Neural network modules only: no I/O, no training loops."""
