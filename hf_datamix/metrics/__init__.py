"""``evaluate`` metrics shipped with hf_datamix, loaded offline from the installed package.

* ``exact_match``: number-aware exact match of generated answers (task error = 1 - exact match);
* ``answer_nll``: negative log-likelihood of gold answers given their prompts, per answer and per token.
"""

from __future__ import annotations

import os
from functools import cache


METRICS = ("exact_match", "answer_nll")
METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def metric_path(name: str) -> str:
    """The folder of the shipped metric ``name`` (what ``evaluate.load`` takes)."""
    if name not in METRICS:
        raise ValueError(f"unknown hf_datamix metric {name!r}; shipped metrics: {list(METRICS)}.")
    return os.path.join(METRICS_DIR, name)


@cache
def load_metric(name: str):
    """``evaluate.load`` of a shipped metric, in memory and without network access; loaded once per process."""
    import evaluate

    return evaluate.load(metric_path(name), keep_in_memory=True)


def metric_info(description: str, inputs_description: str, features: dict):
    """The ``evaluate.MetricInfo`` of a shipped metric (``features``: ``{input name: datasets feature}``)."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs_description,
        features=datasets.Features(features),
    )
