"""worldmodels: World Models (V-M-C) and Dreamer on the same data, measured side by side.

Nothing runs at import time; stages live in :mod:`worldmodels.stages`, the CLI in
:mod:`worldmodels.cli`.
"""

__version__ = "0.1.0"
