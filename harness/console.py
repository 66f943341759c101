"""What other libraries print: progress bars and deprecation warnings, turned off where unwanted.

A quiet run, or one whose output is not a terminal (CI logs, files), must not fill its output with
model-loading bars: they redraw with carriage returns, which a log keeps as one long line each.
"""

from __future__ import annotations

import os
import warnings


def quiet_libraries(warnings_too: bool) -> None:
    """Turn off Hugging Face / tqdm progress bars and advisory logs; with ``warnings_too``, also
    ``FutureWarning`` and ``DeprecationWarning`` (set before those libraries are imported).
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"  # tqdm >= 4.66 reads its defaults from TQDM_* variables
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    if warnings_too:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
