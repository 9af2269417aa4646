"""Negative log-likelihood of gold answers, an ``evaluate`` metric shipped with hf_datamix.

The model's forward pass happens in torch (``hf_datamix.simulate.task_scoring.answer_logprobs``):
a metric module cannot hold a model on the trainer's device without loading one itself.  This
module reduces what that pass gives, the log-probability of every gold-answer token given the prompt
and the answer's earlier tokens, to the two scores: the mean over answers of each answer's summed NLL
(``-log p(answer | prompt)``, nats per answer) and the token-weighted mean NLL (nats per token).
"""

import math

import datasets
import evaluate

from hf_datamix.metrics import metric_info


_DESCRIPTION = "Negative log-likelihood of gold answers given their prompts, per answer and per token."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per answer, the natural-log probability of each of its tokens
        (every value <= 0; at least one token per answer).
Returns:
    nll_per_answer (float): mean over answers of -sum(log-probs), nats per answer.
    nll_per_token (float): -sum of all log-probs / number of tokens, nats per token.
    num_answers (int), num_tokens (int).
Examples:
    >>> metric = hf_datamix.metrics.load_metric("answer_nll")
    >>> metric.compute(predictions=[[-1.0, -1.0], [-2.0]])["nll_per_answer"]
    2.0
"""


class AnswerNLL(evaluate.Metric):
    """NLL of gold answers (see the module docstring)."""

    def _info(self):
        per_answer = datasets.Sequence(datasets.Value("float64"))
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, {"predictions": per_answer})

    def _compute(self, predictions):
        if not predictions or any(len(p) == 0 for p in predictions):
            raise ValueError(
                "answer_nll: every answer needs at least one token log-probability (and there must "
                "be at least one answer)."
            )
        sums = [-math.fsum(p) for p in predictions]
        if any(not math.isfinite(s) or s < -1e-6 for s in sums):
            raise ValueError("answer_nll: log-probabilities must be finite and <= 0; pass log-softmax values.")
        tokens = sum(len(p) for p in predictions)
        return {
            "nll_per_answer": math.fsum(sums) / len(sums),
            "nll_per_token": math.fsum(sums) / tokens,
            "num_answers": len(sums),
            "num_tokens": tokens,
        }
