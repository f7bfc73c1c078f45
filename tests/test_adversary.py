"""The curious cloud: knowledge per threat model, leakage records, reruns on a run dir."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from simulator.adversary import Adversary
from simulator.auxiliary import auxiliary_data
from simulator.engine.local import run_locally
from simulator.engine.workspace import ModelKit
from simulator.evaluator import train_evaluator
from simulator.loading import validate_scenario
from simulator.run import attack_run, build_workspace, run_scenario
from strategies.attacks import BlackBoxQuery, QueryFree, WhiteBox

ATTACKS = [
    {"name": "inverse_network", "epochs": 2, "threat_model": "black_box_query"},
    {"name": "rmle", "iterations": 20, "threat_model": "white_box"},
    {"name": "query_free", "shadow_epochs": 1, "iterations": 10},
]


def with_adversary(raw: dict, **extra) -> dict:
    raw["adversary"] = {"enabled": True, "threat_model": "query_free", "attacks": ATTACKS,
                        "information": {"mi_epochs": 2}, "evaluation_epochs": 1, **extra}
    return raw


def _modules(obj, seen=None):
    """Every nn.Module reachable through dataclass fields and attributes."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found = [obj] if isinstance(obj, nn.Module) else []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            found += _modules(getattr(obj, f.name), seen)
    return found


@pytest.fixture(scope="module")
def adversary(request):
    import copy

    from conftest import SMOKE
    ws = build_workspace(validate_scenario(with_adversary(copy.deepcopy(SMOKE))))
    edges, cloud = ModelKit(ws).initial_states()
    return ws, edges, Adversary(ws, edges, cloud, train_evaluator(ws))


def test_each_threat_model_grants_exactly_its_knowledge(adversary):
    ws, edges, adv = adversary
    free = adv._knowledge("small", "query_free")
    black = adv._knowledge("small", "black_box_query")
    white = adv._knowledge("small", "white_box")
    assert type(free) is QueryFree and type(black) is BlackBoxQuery and type(white) is WhiteBox
    edge_params = {id(p) for p in white.edge.parameters()}
    for knowledge in (free, black):
        reachable = {id(p) for m in _modules(knowledge) for p in m.parameters()}
        assert not reachable & edge_params
        # only the cloud's own model is there, frozen
        assert all(not p.requires_grad for m in _modules(knowledge) for p in m.parameters())
    x = torch.from_numpy(ws.aux_x[:4])
    z = black.query(x)
    assert z.shape[1:] == tuple(free.feature_shape) and not z.requires_grad
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(black.query)


def test_the_evaluator_is_fetched_only_when_a_score_needs_it(adversary):
    """Attack units start while the evaluation classifier still trains elsewhere."""
    ws, edges, adv = adversary
    calls = []

    def fetch():
        calls.append(1)
        return adv.evaluator.state_dict()

    lazy = Adversary(ws, edges, adv.cloud.state_dict(), fetch)
    assert not calls
    x = torch.from_numpy(ws.eval_x[:8])
    torch.testing.assert_close(lazy.evaluator(x), adv.evaluator(x))
    lazy.evaluator(x)
    assert len(calls) == 1


def test_auxiliary_sources(smoke_raw):
    ws = build_workspace(validate_scenario(with_adversary(
        smoke_raw, auxiliary={"source": "noise", "size": 32})))
    x, y = auxiliary_data(ws)
    assert x.shape == (32, *ws.image_shape) and 0 <= x.min() and x.max() <= 1
    assert not np.isin(ws.aux_x[:1], x).all()


def test_leakage_tables_and_rerun_give_the_same_numbers(smoke_raw, tmp_path):
    path = run_scenario(validate_scenario(with_adversary(smoke_raw)), tmp_path / "run",
                        transport_factory=run_locally)
    devices = pd.read_parquet(path / "devices.parquet")
    tiers = pd.read_parquet(path / "tiers.parquet")
    images = pd.read_parquet(path / "leakage_images.parquet")
    for attack in ("inverse_network", "rmle", "query_free", "worst_case"):
        assert devices[f"ssim_{attack}"].between(-1, 1).all()
        assert f"ssim_{attack}_mean" in tiers and f"attack_acc_{attack}_mean" in tiers
    assert set(images["threat_model"]) == {"black_box_query", "white_box", "query_free"}
    # worst case = per device and metric, the most leaking attack
    names = ("inverse_network", "rmle", "query_free")
    for metric, worst in (("ssim", "max"), ("attack_acc", "max"), ("nn_ident", "max"),
                          ("mse", "min")):
        per = devices[[f"{metric}_{a}" for a in names]]
        np.testing.assert_allclose(devices[f"{metric}_worst_case"],
                                   getattr(per, worst)(axis=1))
    for column in ("dcor2_bc", "mi_nats", "mi_paper_nats", "nonzero_per_sample",
                   "eval_acc_real", "chance"):
        assert tiers[column].notna().all(), column
    assert (tiers["mi_paper_nats"] <= 1.0 + 1e-6).all()
    # information metrics use every logged inference feature (up to max_samples), not
    # only the images_per_device reconstructed ones
    logged = pd.read_parquet(path / "observations" / "index.parquet")
    logged = logged[logged["phase"].astype(str) == "inference"].groupby("tier").size()
    attacked = images[images["attack"] == "rmle"].groupby("tier").size()
    for row in tiers.itertuples():
        assert row.info_samples == min(logged[row.tier], 2000) > attacked[row.tier]
    assert (path / "reconstructions" / "rmle__small.npz").is_file()
    # the long table is the record; the wide columns are its views
    long = pd.read_parquet(path / "leakage.parquet")
    assert set(long["attack"]) == {*names, "worst_case", "information"}
    assert set(long.loc[long["attack"].isin(names), "threat_model"]) == set(
        images["threat_model"])
    worst = long[(long["scope"] == "device") & (long["attack"] == "worst_case")
                 & (long["metric"] == "ssim")].set_index("device_id")["value"]
    np.testing.assert_allclose(
        devices.set_index("device_id")["ssim_worst_case"].sort_index(),
        worst.sort_index())

    attack_run(path)
    pd.testing.assert_frame_equal(devices, pd.read_parquet(path / "devices.parquet"))
    again = pd.read_parquet(path / "leakage.parquet")
    pd.testing.assert_frame_equal(long[long["scope"] == "device"],
                                  again[again["scope"] == "device"])
    assert any((h / "leakage.parquet").is_file() for h in (path / "history").iterdir())


def test_attack_on_a_directory_without_observations(tmp_path):
    with pytest.raises(FileNotFoundError, match="observation log"):
        attack_run(tmp_path)


@pytest.mark.slow
def test_ray_adversary_matches_a_rerun_on_the_run_directory(smoke_raw, tmp_path):
    """The in-run attack (Ray actors) and `siftsim attack` agree on every number."""
    path = run_scenario(validate_scenario(with_adversary(smoke_raw)), tmp_path / "run")
    before = pd.read_parquet(path / "devices.parquet")
    tiers_before = pd.read_parquet(path / "tiers.parquet")
    attack_run(path)
    pd.testing.assert_frame_equal(before, pd.read_parquet(path / "devices.parquet"))
    # neural MI estimates may differ in the last float bits between processes
    pd.testing.assert_frame_equal(tiers_before, pd.read_parquet(path / "tiers.parquet"),
                                  check_exact=False, rtol=1e-4, atol=1e-6)


def test_attacks_on_the_observation_log_run_in_a_scenario(smoke_raw, tmp_path):
    """fora and sdar get the cloud's observed features of the phases they declare and
    never a query oracle: they run under query_free inside a real run."""
    raw = with_adversary(smoke_raw)
    raw["observation"] = {"phases": ["training", "inference"], "training_per_device": 8}
    raw["adversary"].update(
        threat_model="query_free", phases=["inference"],
        attacks=[{"name": "fora", "substitute_epochs": 2, "epochs": 2},
                 {"name": "sdar", "epochs": 2}],
        information={"enabled": False})
    path = run_scenario(validate_scenario(raw), tmp_path / "run",
                        transport_factory=run_locally)
    leakage = pd.read_parquet(path / "leakage.parquet")
    rows = leakage[(leakage["scope"] == "tier") & (leakage["metric"] == "ssim")]
    assert {"fora", "sdar"} <= set(rows["attack"])
    assert set(rows[rows["attack"] == "fora"]["threat_model"]) == {"query_free"}
    assert rows["value"].between(-1, 1).all()
