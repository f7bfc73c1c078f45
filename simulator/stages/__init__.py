"""A run is a sequence of stages over its run directory.

========  ==========================================  ==================================
stage     reads                                       writes
========  ==========================================  ==================================
train     the scenario (and its own round checkpoint)  stages/train/, rounds.parquet,
                                                      participation.parquet
deploy    stages/train/checkpoint.pt                  checkpoints/ (deployed weights)
infer     checkpoints/, stages/train/                 devices, tiers, observations/
attack    checkpoints/, observations/                 stages/attack/<tier>/<attack>
records   stages/attack/, devices, tiers              leakage (long), devices/tiers views
========  ==========================================  ==================================

Each stage writes its outputs atomically and is then marked done in ``manifest.json``;
``siftsim run --resume`` skips what is done and continues the rest (training from its
last round checkpoint, attacks per tier and attack). train and infer need the devices,
so they run inside one Flower simulation; attack runs after it has returned, on Ray
workers with real CPUs, and is the same code as ``siftsim attack RUN_DIR``.
"""

from simulator.stages.context import RunContext

STAGES = ("train", "deploy", "infer", "attack", "records")

__all__ = ["STAGES", "RunContext"]
