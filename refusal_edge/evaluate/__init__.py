"""Offline evaluation and calibration from one prefill per prompt.

A refusal decision depends only on the first-token distribution, so each prompt is prefilled once, its
first-token scores are stored (``store``), and every policy, threshold sweep and calibration is computed
from the stored scores (``batch``, ``analysis``, ``sweep``, ``calibrate``) without touching the model again.

The Python API is ``evaluate`` and ``calibrate`` (library.py); ``tasks`` names the standard benchmarks.
"""

# The submodule calibrate.py (the threshold search) is loaded first, so that the name ``calibrate`` below is the
# library function and stays so (a submodule sets its package attribute only when first imported).
from . import calibrate as _threshold_search  # noqa: F401
from .library import Calibrated, Report, calibrate, evaluate  # noqa: E402
from .tasks import TASKS  # noqa: E402

__all__ = ["evaluate", "calibrate", "Report", "Calibrated", "TASKS"]
