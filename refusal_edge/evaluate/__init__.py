"""Offline evaluation and calibration from one prefill per prompt.

A refusal decision depends only on the first-token distribution, so each prompt is prefilled once, its
first-token scores are stored (``store``), and every policy, threshold sweep and calibration is computed
from the stored scores (``batch``, ``analysis``, ``sweep``, ``calibrate``) without touching the model again.
"""
