"""The curious cloud attacks what it observed, under explicit threat models.

For each tier, :class:`Adversary` builds the knowledge object each attack's threat model
grants (never more), fits the attack, reconstructs the logged features of every device
and scores each reconstruction against the private original. Knowledge objects hold no
more than their type allows and a black-box oracle never leaves this process. Scoring
uses an independent evaluation classifier (:mod:`simulator.evaluator`), trained on the
held-out split that neither the victims nor the attacker used. The auxiliary images
come from :mod:`simulator.auxiliary`. Plain Python; the Flower/Ray seam runs it in actors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from analysis.metrics import (bias_corrected_dcor2, effective_volume,
                              estimate_mutual_information, mse,
                              nearest_neighbour_identification, psnr, ssim)
from simulator.engine.observations import PHASES, TierObservations
from simulator.auxiliary import auxiliary_data
from simulator.engine.workspace import ModelKit, Workspace
from simulator.evaluator import build_evaluator, single_thread, train_evaluator
from simulator.scenario import plugin_params
from simulator.seeding import derive_seed, generator, seeded
from strategies.attacks import ATTACKS, THREAT_MODELS, BlackBoxQuery, QueryOracle, WhiteBox

__all__ = ["Adversary", "AttackResult", "Spend", "TierLeakage", "combine", "run_adversary"]

_CHUNK = 256


@dataclass
class AttackResult:
    """One attack on one tier: per-image scores, a few saved reconstructions, and what
    the attacker spent (:class:`Spend` as a dict; the attack stage adds
    ``cpu_seconds``; empty for units saved before budgets were recorded)."""

    label: str
    images: dict[str, np.ndarray]       # column -> per reconstructed image
    reconstructions: dict[str, np.ndarray]
    budget: dict[str, float] = field(default_factory=dict)


@dataclass
class Spend:
    """What one attack cost the attacker, counted from outside the attack.

    Attributes
    ----------
    aux_images
        Auxiliary images it was given (after its ``aux_size``).
    oracle_queries
        Images it sent through the victim's edge (black-box and white-box oracles;
        0 for an attack that never queries, whatever it is granted).
    optimisation_steps
        Parameter updates of every torch optimiser it ran while fitting and
        reconstructing: decoder or substitute training steps, critic steps,
        inversion iterations (each chunk of images counts its own).
    """

    aux_images: int = 0
    oracle_queries: int = 0
    optimisation_steps: int = 0


class _CountedEdge:
    """The victim's edge behind the oracle, counting the images sent to it."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor],
                 spend: Spend) -> None:
        self.run, self.spend = run, spend

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.spend.oracle_queries += len(x)
        return self.run(x)


@contextmanager
def _counting_steps(spend: Spend) -> Iterator[None]:
    """Count every optimiser step in this process meanwhile: an attack unit runs
    alone in its process, so they are all the attack's (no plug-in can under-report)."""
    def count(*_: Any) -> None:
        spend.optimisation_steps += 1
    handle = register_optimizer_step_post_hook(count)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class TierLeakage:
    """What one tier's attacks produced."""

    tier: str
    images: dict[str, np.ndarray]                       # per reconstructed image
    reconstructions: dict[str, dict[str, np.ndarray]]   # label -> original/recon/device
    information: dict[str, Any] = field(default_factory=dict)


def combine(tier: str, parts: list[AttackResult], information: dict[str, Any]) -> TierLeakage:
    """One tier's attack results (in the scenario's order) as a :class:`TierLeakage`."""
    keys = ("attack", "threat_model", "device_id", "sample", "ssim", "psnr", "mse",
            "eval_correct", "nn_correct")
    images = {k: np.concatenate([p.images[k] for p in parts]) if parts else np.array([])
              for k in keys}
    return TierLeakage(tier, images, {p.label: p.reconstructions for p in parts},
                       information)


class Adversary:
    """Runs the scenario's attacks on one run's observations.

    Parameters
    ----------
    ws
        The run's workspace (private originals are used only for scoring).
    edge_states, cloud_state
        The deployed weights (the cloud holds them; what an attack may read of them is
        decided by its threat model).
    evaluator_state
        Weights of the independent evaluation classifier, or a function that returns
        them: it is called when a score first needs them, so an attack can start while
        the classifier still trains elsewhere (the attack stage's Ray units).
    """

    def __init__(self, ws: Workspace, edge_states: dict[str, dict[str, torch.Tensor]],
                 cloud_state: dict[str, torch.Tensor],
                 evaluator_state: dict[str, torch.Tensor]
                 | Callable[[], dict[str, torch.Tensor]]) -> None:
        self.ws, self.kit = ws, ModelKit(ws)
        self.edge_states = edge_states
        self.cloud = self.kit.cloud()
        self.cloud.load_state_dict(cloud_state)
        self.cloud.eval()
        self._evaluator_state = evaluator_state
        self._evaluator: torch.nn.Module | None = None
        self.aux_x, self.aux_y = auxiliary_data(ws)

    @property
    def evaluator(self) -> torch.nn.Module:
        """The evaluation classifier, built on first use."""
        if self._evaluator is None:
            state = self._evaluator_state
            model = build_evaluator(self.kit)
            model.load_state_dict(state() if callable(state) else state)
            self._evaluator = model.eval()
        return self._evaluator

    def attack_tier(self, tier: str, obs: TierObservations) -> TierLeakage:
        """Every attack of the scenario, and the information metrics, against ``tier``."""
        parts = [self.attack(tier, spec, obs) for spec in self.ws.scenario.adversary.attacks]
        info = self.information(tier, obs) if self.ws.scenario.adversary.information.enabled \
            else {}
        return combine(tier, parts, info)

    def attack(self, tier: str, spec: Any, obs: TierObservations) -> AttackResult:
        """One attack (a scenario ``attacks`` entry) against the observed features of
        ``tier``: each reconstructed image scored against its private original."""
        with single_thread():
            return self._attack(tier, spec, obs)

    def _attack(self, tier: str, spec: Any, obs: TierObservations) -> AttackResult:
        adv = self.ws.scenario.adversary
        rows = _select(obs, adv.phases, adv.images_per_device)
        z = torch.from_numpy(obs.z[rows].astype(np.float32))
        samples, devices = obs.sample[rows], obs.device_id[rows]
        x_true = torch.from_numpy(self.ws.private_x[samples])
        y_true = torch.from_numpy(self.ws.private_y[samples])
        gallery, true_index = _gallery(samples, x_true)
        label = spec.label or spec.name
        granted = spec.threat_model or adv.threat_model
        attack = ATTACKS.create(spec.name, plugin_params(spec))
        spend = Spend()
        # Every grid point of a searched attack draws the same seeds (the label's):
        # points differ by their setting, not by luck.
        with seeded(derive_seed(self.ws.scenario.seed, "attack", label, tier)), \
                _counting_steps(spend):
            knowledge = self._knowledge(tier, granted, obs, attack.observed_phases,
                                        aux_size=spec.aux_size, spend=spend)
            attack.fit(knowledge, generator(self.ws.scenario.seed, "attack-fit", label,
                                            tier))
            x_hat = torch.cat([attack.reconstruct(c) for c in z.split(_CHUNK)]) if len(z) \
                else torch.empty(0, *self.ws.image_shape)
        with torch.no_grad():
            pred = torch.cat([self.evaluator(c).argmax(1) for c in x_hat.split(_CHUNK)]) \
                if len(z) else torch.empty(0, dtype=torch.long)
        images = {"attack": np.full(len(z), label), "threat_model": np.full(len(z), granted),
                  "device_id": devices, "sample": samples,
                  "ssim": ssim(x_hat, x_true).numpy(), "psnr": psnr(x_hat, x_true).numpy(),
                  "mse": mse(x_hat, x_true).numpy(),
                  "eval_correct": (pred == y_true).numpy(),
                  "nn_correct": nearest_neighbour_identification(
                      x_hat, gallery, true_index).numpy()}
        k = adv.saved_reconstructions
        recon = {"original": x_true[:k].numpy(), "reconstruction": x_hat[:k].numpy(),
                 "device_id": devices[:k]}
        return AttackResult(label, images, recon, budget=asdict(spend))

    def information(self, tier: str, obs: TierObservations) -> dict[str, Any]:
        """The tier's information metrics (dCor, MI, feature volume, evaluator)."""
        with single_thread():
            return self._information(tier, obs)

    def _knowledge(self, tier: str, threat_model: str, obs: TierObservations | None = None,
                   phases: tuple[str, ...] = (), aux_size: int | None = None,
                   spend: Spend | None = None) -> Any:
        """Exactly what ``threat_model`` grants for ``tier``: built here, never shipped.

        Every threat model holds the cloud's own log of the tier's features; an attack
        gets the rows of the phases it declares (``observed_phases``), none by default.
        It gets the first ``aux_size`` auxiliary images (all: None). ``spend`` records
        the images given and counts those sent through the oracle.
        """
        spend = spend if spend is not None else Spend()
        aux_x, aux_y = self.aux_x[:aux_size], self.aux_y[:aux_size]
        spend.aux_images = len(aux_y)
        view = copy.deepcopy(self.cloud.tier_view(tier)).eval()
        for p in view.parameters():
            p.requires_grad_(False)
        keep = np.isin(obs.phase, [PHASES[p] for p in phases]) if obs is not None \
            else np.zeros(0, bool)
        observed = torch.from_numpy(obs.z[keep].astype(np.float32)) if keep.any() else None
        base = dict(cloud=view, aux_x=torch.from_numpy(aux_x),
                    aux_y=torch.from_numpy(aux_y),
                    feature_shape=tuple(self.kit.costs[tier].feature_shape),
                    image_shape=self.ws.image_shape, normalization=self.ws.normalization,
                    observed=observed)
        cls = THREAT_MODELS[threat_model]
        if cls is THREAT_MODELS["query_free"]:
            return cls(**base)
        edge = self.kit.edge(tier)
        edge.load_state_dict(self.edge_states[tier])
        edge.eval()
        defense = self.kit.defenses[tier]
        noise = generator(self.ws.scenario.seed, "oracle", tier)
        oracle = QueryOracle(_CountedEdge(
            lambda x: defense.transform(edge(x), training=False, generator=noise),
            spend))
        if cls is BlackBoxQuery:
            return BlackBoxQuery(**base, query=oracle)
        return WhiteBox(**base, query=oracle, edge=copy.deepcopy(edge))

    def _information(self, tier: str, obs: TierObservations) -> dict[str, Any]:
        """Information metrics over every logged feature of the attacked phases (up to
        ``max_samples``, spread evenly over devices), not only the reconstructed ones:
        neural MI estimates need thousands of samples."""
        adv = self.ws.scenario.adversary
        cfg, seed = adv.information, self.ws.scenario.seed
        per_device = -(-cfg.max_samples // max(1, len(np.unique(obs.device_id))))
        rows = _select(obs, adv.phases, per_device)[:cfg.max_samples]
        z = torch.from_numpy(obs.z[rows].astype(np.float32))
        if not torch.isfinite(z).all():
            bad = int((~torch.isfinite(z.flatten(1))).any(1).sum())
            raise ValueError(f"tier {tier}'s logged features hold NaN or infinities in "
                             f"{bad} of {len(z)} rows: its training diverged (see "
                             "rounds.csv, finite_share), so no information metric is "
                             "defined; lower the learning rate or the defense's strength")
        x = torch.from_numpy(self.ws.private_x[obs.sample[rows]])
        y = torch.from_numpy(self.ws.private_y[obs.sample[rows]])
        vol = effective_volume(z)
        out = {"dcor2_bc": bias_corrected_dcor2(x, z, generator=generator(seed, "dcor", tier)),
               "nonzero_per_sample": float(vol["mean_per_sample"]),
               "nonzero_fraction": float(vol["fraction"]),
               "eval_acc_real": _accuracy(self.evaluator, x, y),
               "chance": 1.0 / self.ws.num_classes, "info_samples": len(rows)}
        with seeded(derive_seed(seed, "mi", tier)):
            est = estimate_mutual_information(x, z, critic="mlp", objective="smile",
                                              epochs=cfg.mi_epochs, max_dims=cfg.mi_dims,
                                              generator=generator(seed, "mi", tier))
        out.update(mi_nats=est.value_nats, mi_estimator=f"{est.estimator}/{est.critic}, "
                   f"top-{cfg.mi_dims} PCs, batch {est.batch_size}, "
                   f"held-out {est.n_held_out}")
        if cfg.paper_variant:
            with seeded(derive_seed(seed, "mi-paper", tier)):
                paper = estimate_mutual_information(
                    x, z, critic="conv_sigmoid", objective="mine", epochs=cfg.mi_epochs,
                    generator=generator(seed, "mi-paper", tier))
            out["mi_paper_nats"] = paper.value_nats
        return out


def run_adversary(ws: Workspace, edge_states: dict[str, dict[str, torch.Tensor]],
                  cloud_state: dict[str, torch.Tensor],
                  observations: dict[str, TierObservations]) -> list[TierLeakage]:
    """All tiers in this process (the Flower seam runs the same in Ray actors)."""
    adversary = Adversary(ws, edge_states, cloud_state, train_evaluator(ws))
    return [adversary.attack_tier(t, o) for t, o in sorted(observations.items())]


def _select(obs: TierObservations, phases: tuple[str, ...], per_device: int) -> np.ndarray:
    """Rows of the wanted phases, at most ``per_device`` per (device, phase)."""
    codes = {"training": 0, "inference": 1}
    keep, seen = [], {}
    for i, (ph, dev) in enumerate(zip(obs.phase.tolist(), obs.device_id.tolist())):
        if ph in {codes[p] for p in phases} and seen.get((dev, ph), 0) < per_device:
            seen[(dev, ph)] = seen.get((dev, ph), 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _gallery(samples: np.ndarray, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct victim images of the tier, and each row's index among them."""
    uniq, first, inverse = np.unique(samples, return_index=True, return_inverse=True)
    return x[torch.from_numpy(first)], torch.from_numpy(inverse.reshape(-1))


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([model(c).argmax(1) for c in x.split(_CHUNK)])
    return float((pred == y).float().mean())
