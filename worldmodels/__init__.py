"""worldmodels: World Models (V-M-C) and Dreamer on the same data, measured side by side.

Nothing runs at import time; stages live in :mod:`worldmodels.stages`, the CLI in
:mod:`worldmodels.cli`.

One setting is made here, because it must be made before torch loads: OpenMP's idle threads
sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the environment already sets a
policy). With spinning threads, a 2-thread op on a 2-core machine whose other core is busy slowed
2-3.8x, and up to 10x in the field; sleeping ones 1.3-2.0x (benchmarks/threads.py).
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

__version__ = "0.1.0"
