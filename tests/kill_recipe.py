"""Run a recipe and SIGKILL it at a chosen point, as a crash or `kill -9` would.

    python tests/kill_recipe.py POINT recipes/midtrain.py ARGS...

POINT is ``save:<stage>:<step>`` (right after checkpoint <step> of stage <stage> is complete) or
``after:<stage>`` (stage <stage> trained, evaluated and recorded, before the next one starts).
"""

import os
import runpy
import signal
import sys

from hf_datamix import DataMixTrainer, MixingController


point, recipe, *sys.argv[1:] = sys.argv[1:]
kind, *where = point.split(":")
stage = int(where[0])


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if kind == "save":
    on_save = MixingController.on_save

    def killing_on_save(self, args, state, control, **kwargs):
        result = on_save(self, args, state, control, **kwargs)
        if self.trainer.stage == stage and state.global_step == int(where[1]):
            die()
        return result

    MixingController.on_save = killing_on_save
elif kind == "after":
    hand_over = DataMixTrainer.model_for_next_trainer

    def killing_hand_over(self, output_dir):
        model = hand_over(self, output_dir)
        if self.stage == stage:
            die()
        return model

    DataMixTrainer.model_for_next_trainer = killing_hand_over
else:
    raise SystemExit(f"unknown kill point {point!r}")
sys.argv[0] = recipe
runpy.run_path(recipe, run_name="__main__")
