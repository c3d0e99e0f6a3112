"""The HDF5 rollout store, the held-out split and torch datasets over them."""

from worldmodels.data.store import (
    SCHEMA_VERSION,
    Episode,
    RolloutReader,
    RolloutWriter,
    StoreError,
)

__all__ = ["SCHEMA_VERSION", "Episode", "RolloutReader", "RolloutWriter", "StoreError"]
