"""One module per pipeline stage, each with ``run(config, paths) -> artifact path``."""
