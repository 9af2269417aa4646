"""The one home of the file names a run writes and of the numerical tolerances shared by modules.

Nothing here imports anything, so any module (and a reader of a run's folder that must not load a
Trainer) can use them.
"""

#: Every decision of a run (``output_dir/mixtures.json``): step, stage, weights, strategy, scores.
MIXTURES_FILE = "mixtures.json"
#: One mixture (the final one of a run, or one pushed to the Hub): ``Mixture.save`` / ``from_pretrained``.
MIXTURE_FILE = "mixture.json"
#: The compute ledger of a run.
COMPUTE_FILE = "compute.json"
#: Per-stage results of a continual run (``hf_datamix.continual``).
RESULTS_FILE = "results.json"
#: One proxy's result in a swarm member's folder (``hf_datamix.simulate.proxy_swarm``).
MEMBER_RESULT_FILE = "result.json"
#: The mixing state in a checkpoint, written last (a checkpoint without it is incomplete).
STATE_FILE = "datamix_state.json"
#: Trainer's own state file in a checkpoint.
TRAINER_STATE_FILE = "trainer_state.json"
#: The files of a run that ``hf-datamix push`` uploads when present.
RUN_FILES = (MIXTURES_FILE, COMPUTE_FILE, RESULTS_FILE)

#: How far a mixture's weights may sum away from 1 (and a law's input rows off the simplex).
SIMPLEX_TOLERANCE = 1e-6
#: How far a weight may exceed its repetition cap and still honour it (swarm draws, fallback candidates).
CAP_TOLERANCE = 1e-6
