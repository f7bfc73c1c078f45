"""The one schema of a scenario file.

Every section is a frozen pydantic model with unknown keys forbidden. Plug-in sections
(dataset, backbone, encoder, defense, attacks) are discriminated unions generated from the
registries, so valid names and each plug-in's parameters come from the plug-ins
themselves (:mod:`.base`). Sections are grouped by what they describe: the devices
(:mod:`.fleet`), training (:mod:`.training`), the adversary (:mod:`.adversary`), where
it runs (:mod:`.runtime`), and the whole scenario with its cross-section checks
(:mod:`.root`). Raw YAML is touched only in :mod:`simulator.loading`.
"""

from simulator.scenario.adversary import Adversary, Auxiliary, Information, Observation
from simulator.scenario.base import Section, plugin_params
from simulator.scenario.fleet import (Assignment, DeviceProfile, Fleet, ModelSection,
                                      Partition, Splits, Tier)
from simulator.scenario.root import Scenario
from simulator.scenario.runtime import (AdversaryFault, CloudFault, Faults, FlowerConfig,
                                        NodeFault, RayConfig, Sweep)
from simulator.scenario.training import (Collapse, EdgeLossWarmup, Inference, Optimizer,
                                         RoundTiming, TimeOfDay, Training)

__all__ = ["Adversary", "AdversaryFault", "Assignment", "Auxiliary", "CloudFault",
           "Collapse", "DeviceProfile", "EdgeLossWarmup", "Faults", "Fleet", "FlowerConfig",
           "Information", "Inference", "ModelSection", "NodeFault", "Observation",
           "Optimizer", "Partition", "RayConfig", "RoundTiming", "Scenario", "Section",
           "Splits", "Sweep", "Tier", "TimeOfDay", "Training", "plugin_params"]
