"""Number-aware exact match of short answers, an ``evaluate`` metric shipped with hf_datamix.

Load it offline with ``hf_datamix.metrics.load_metric("exact_match")`` (``evaluate.load`` on this
folder).  The comparison is :func:`hf_datamix.data.instruct_tasks.exact_match`: case, whitespace,
surrounding quotes and trailing punctuation are ignored, numbers compare by value ("3.0" matches
"3", "1,200" matches "1200").
"""

import datasets
import evaluate

from hf_datamix.data.instruct_tasks import exact_match
from hf_datamix.metrics import metric_info


_DESCRIPTION = "Share of predictions equal to their reference up to case, quotes, punctuation and number format."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated answers, cut at the end of the answer (eos).
    references (list of str): gold answers, one per prediction.
Returns:
    exact_match (float): share of matches, in [0, 1].
    task_error (float): 1 - exact_match.
    matches (list of int): 1 where the prediction matches, else 0.
Examples:
    >>> metric = hf_datamix.metrics.load_metric("exact_match")
    >>> metric.compute(predictions=["3.0", "Paris."], references=["3", "london"])["exact_match"]
    0.5
"""


class ExactMatch(evaluate.Metric):
    """Number-aware exact match (see the module docstring)."""

    def _info(self):
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            {"predictions": datasets.Value("string"), "references": datasets.Value("string")},
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("exact_match: no predictions to score; give at least one prediction and reference.")
        matches = [int(exact_match(p, r)) for p, r in zip(predictions, references)]
        rate = sum(matches) / len(matches)
        return {"exact_match": rate, "task_error": 1.0 - rate, "matches": matches}
