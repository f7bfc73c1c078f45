"""Scenario schema: bad files are rejected before anything runs, with every problem named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simulator.loading import ScenarioError, apply_override, load_scenario, validate_scenario

REPO = Path(__file__).resolve().parents[1]


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        validate_scenario(raw)
    return info.value.problems


def test_smoke_scenario_is_valid(smoke_raw):
    sc = validate_scenario(smoke_raw)
    assert sc.tier_counts() == {"small": 4, "large": 3}
    assert sc.num_devices == 7


def test_misspelt_plugin_parameter_names_its_path(smoke_raw):
    smoke_raw["tiers"][1]["defense"] = {"name": "gaussian_noise", "sigam": 0.3}
    (problem,) = _problems(smoke_raw)
    assert problem.startswith("tiers[1].defense.sigam: unknown key")


def test_out_of_range_value_names_path_value_and_range(smoke_raw):
    smoke_raw["tiers"][1]["profile"] = {"uplink_mbps": -5}
    (problem,) = _problems(smoke_raw)
    assert problem.startswith("tiers[1].profile.uplink_mbps:")
    assert "greater than 0" in problem and "-5" in problem


def test_unknown_plugin_lists_valid_names(smoke_raw):
    smoke_raw["tiers"][0]["defense"] = {"name": "magic"}
    (problem,) = _problems(smoke_raw)
    assert "tiers[0].defense" in problem
    for known in ("none", "siftfunnel", "gaussian_noise"):
        assert f"'{known}'" in problem


def test_every_problem_is_listed_at_once(smoke_raw):
    smoke_raw["partition"]["scheme"] = "random"
    smoke_raw["training"]["rounds"] = -1
    smoke_raw["trainig"] = {}
    problems = _problems(smoke_raw)
    paths = sorted(p.split(":")[0] for p in problems)
    assert paths == ["partition.scheme", "trainig", "training.rounds"]
    assert any("'iid', 'dirichlet' or 'shards'" in p for p in problems)


def test_tier_needs_exactly_one_size(smoke_raw):
    smoke_raw["tiers"][0]["fraction"] = 0.5
    (problem,) = _problems(smoke_raw)
    assert problem.startswith("tiers[0]") and "exactly one of `count` or `fraction`" in problem


def test_fractions_expand_to_the_device_total(smoke_raw):
    smoke_raw["devices"] = 10
    smoke_raw["tiers"][0].pop("count"), smoke_raw["tiers"][1].pop("count")
    smoke_raw["tiers"][0]["fraction"], smoke_raw["tiers"][1]["fraction"] = 0.36, 0.64
    assert validate_scenario(smoke_raw).tier_counts() == {"small": 4, "large": 6}


def test_attack_beyond_threat_model_is_rejected(smoke_raw):
    smoke_raw["adversary"] = {"enabled": True, "threat_model": "query_free",
                              "attacks": [{"name": "rmle"}]}
    (problem,) = _problems(smoke_raw)
    assert "rmle" in problem and "white_box" in problem


def test_overrides_set_nested_and_indexed_values(smoke_raw):
    apply_override(smoke_raw, "training.rounds=7")
    apply_override(smoke_raw, "tiers.1.count=5")
    apply_override(smoke_raw, "tiers[0].defense={name: gaussian_noise, sigma: 0.1}")
    sc = validate_scenario(smoke_raw)
    assert sc.training.rounds == 7 and sc.tier_counts()["large"] == 5
    assert sc.tiers[0].defense.sigma == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not an index"):
        apply_override(smoke_raw, "tiers.9.count=1")


def test_override_wildcard_sets_every_list_item_independently(smoke_raw):
    apply_override(smoke_raw, "tiers.*.defense={name: siftfunnel, beta: 0.5}")
    apply_override(smoke_raw, "tiers[*].defense.gamma=0.25")
    sc = validate_scenario(smoke_raw)
    assert [t.defense.name for t in sc.tiers] == ["siftfunnel"] * len(sc.tiers)
    assert {(t.defense.beta, t.defense.gamma) for t in sc.tiers} == {(0.5, 0.25)}
    smoke_raw["tiers"][0]["defense"]["beta"] = 9.0  # copies, not one shared mapping
    assert smoke_raw["tiers"][1]["defense"]["beta"] == 0.5
    with pytest.raises(ValueError, match=r"\* stands for every item of a list"):
        apply_override(smoke_raw, "training.*=1")


def test_load_scenario_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)


def test_cli_validate_exits_nonzero_without_traceback(tmp_path, smoke_raw):
    smoke_raw["tiers"][0]["profile"] = {"availability": 1.5}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(smoke_raw))
    res = subprocess.run([sys.executable, "-m", "simulator", "validate", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2
    assert "tiers[0].profile.availability" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path):
    # its name is its file's: run folders (runs/<name>-...) say which file made them
    assert load_scenario(path).name == path.stem


def test_edge_loss_warmup_weights_and_a_hold_that_never_ends(smoke_raw):
    from simulator.scenario import EdgeLossWarmup
    assert [EdgeLossWarmup().weight(r) for r in range(2)] == [1.0, 1.0]
    ramp = EdgeLossWarmup(hold=2, ramp=3)
    assert [ramp.weight(r) for r in range(7)] == [0, 0, 0.25, 0.5, 0.75, 1, 1]
    smoke_raw["training"]["edge_loss_warmup"] = {"hold": smoke_raw["training"]["rounds"]}
    validate_scenario(smoke_raw)   # no tier has an edge loss: the hold delays nothing
    smoke_raw["tiers"][0]["defense"] = {"name": "gaussian_noise"}   # no edge loss either
    validate_scenario(smoke_raw)
    smoke_raw["tiers"][1]["defense"] = {"name": "nopeek"}
    with pytest.raises(ScenarioError, match=r"edge_loss_warmup.hold.*\['large'\] never "
                       "trains"):
        validate_scenario(smoke_raw)


def _cli_validate(tmp_path, raw, capsys) -> tuple[int, str]:
    """Run ``siftsim validate`` in-process on ``raw``; exit status and all output."""
    from simulator.cli import main
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    status = main(["validate", str(path)])
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("training.optimizer", "lr", float("inf"), "training.optimizer.lr: expected a "
     "finite number"),
    ("training.optimizer", "betas", [0.5, float("nan")], "training.optimizer.betas[1]: "
     "expected a finite number"),
    ("tiers.0", "count", True, "tiers[0].count: expected a number, not a boolean"),
    ("", "seed", False, "seed: expected a number, not a boolean"),
    ("splits", "auxiliary", 1.5, "splits.auxiliary: a float is a fraction"),
    ("", "name", "../../escape", "name: must be a file-name-safe token"),
    ("", "name", "runs/x", "name: must be a file-name-safe token"),
    ("tiers.0.defense", "sigma", float("inf"), "tiers[0].defense.sigma: expected a "
     "finite number"),
    ("tiers.0.defense", "sigma", True, "tiers[0].defense.sigma: expected a number"),
])
def test_cli_rejects_bad_values_naming_the_key(tmp_path, smoke_raw, capsys, section,
                                               key, value, expected):
    smoke_raw["tiers"][0]["defense"] = {"name": "gaussian_noise"}
    node = smoke_raw
    for part in filter(None, section.split(".")):
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[key] = value
    status, output = _cli_validate(tmp_path, smoke_raw, capsys)
    assert status == 2
    assert expected in output
    assert "Traceback" not in output


def test_cli_names_a_missing_plugin_name_its_choices_and_the_stray_key(tmp_path,
                                                                       smoke_raw, capsys):
    smoke_raw["dataset"] = {"name_typo": "digits"}
    status, output = _cli_validate(tmp_path, smoke_raw, capsys)
    assert status == 2 and "Traceback" not in output
    assert "dataset: missing key 'name' (one of: " in output
    assert "'digits', 'fashion_mnist'" in output and "unknown key 'name_typo'" in output


@pytest.mark.parametrize("section", ["dataset", "model.backbone", "tiers.0.encoder",
                                     "tiers.0.defense", "adversary.attacks.0"])
def test_every_plugin_section_names_its_missing_name(smoke_raw, section):
    smoke_raw["adversary"] = {"enabled": True, "attacks": [{"name": "inverse_network"}]}
    node, parts = smoke_raw, section.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    node[last] = {"nam": "x"}
    (problem,) = _problems(smoke_raw)
    assert "missing key 'name' (one of: '" in problem and "unknown key 'nam'" in problem


def test_unknown_plugin_name_and_non_mapping_list_the_choices(smoke_raw):
    smoke_raw["model"] = {"backbone": {"name": "resnet"}}
    smoke_raw["adversary"] = {"auxiliary": {"source": "dataset", "dataset": "mnist"}}
    problems = _problems(smoke_raw)
    assert "model.backbone: unknown backbone 'resnet' (one of: 'he_cifar', " \
        "'mnist_cnn', 'siftfunnel_cnn')" in problems
    assert any(p.startswith("adversary.auxiliary.dataset: expected a mapping with key "
                            "'name'") for p in problems)


def test_numbers_stay_lenient_where_they_should(smoke_raw):
    smoke_raw["training"]["optimizer"]["lr"] = 1  # a YAML int for a float field
    smoke_raw["tiers"][0]["defense"] = {"name": "siftfunnel", "dcor": False}
    smoke_raw["name"] = "smoke-v1.2_b"
    sc = validate_scenario(smoke_raw)
    assert sc.training.optimizer.lr == 1.0 and sc.tiers[0].defense.dcor is False


def test_plugin_params_are_strict_without_the_simulator():
    from pydantic import Field, ValidationError

    from strategies.registry import PluginParams

    class Params(PluginParams):
        rate: float = Field(0.5, ge=0)
        steps: int = 3
        flag: bool = True

    assert Params.model_validate({"rate": 2, "flag": False}).rate == 2.0
    for bad in ({"rate": float("nan")}, {"steps": True}, {"rate": False}):
        with pytest.raises(ValidationError):
            Params.model_validate(bad)
# --- the real fleet: distributions, fleet section, ladder, round timing ----------

FLEET_RAW = {"profile": {"compute_gflops": {"dist": "lognormal", "median": 5,
                                            "spread": 3, "max": 400},
                         "availability": {"dist": "uniform", "low": 0.5, "high": 1}},
             "trace": "traces/phones.parquet"}


def test_fleet_sections_validate_and_round_trip(smoke_raw):
    smoke_raw["fleet"] = FLEET_RAW
    smoke_raw["tiers"][0]["profile"] = {"memory_mb": {"dist": "categorical",
                                                      "values": [64, 256]},
                                        "uplink_mbps": 2}
    smoke_raw["training"]["timing"] = {"deadline_s": 30, "over_selection": 1.3,
                                       "stragglers": "accept_late",
                                       "dropout_probability": 0.1,
                                       "time_of_day": {"amplitude": 0.6}}
    sc = validate_scenario(smoke_raw)
    assert sc.fleet.profile.compute_gflops.spread == 3
    assert sc.tiers[0].profile.layer().keys() == {"memory_mb", "uplink_mbps"}
    dumped = sc.model_dump(mode="json")
    assert dumped["tiers"][0]["profile"]["uplink_mbps"] == 2.0  # plain number again
    assert validate_scenario(dumped) == sc


def test_fleet_problems_name_their_paths(smoke_raw):
    smoke_raw["fleet"] = {"profile": {"availability": {"dist": "lognormal",
                                                       "median": 0.8, "spread": 2}},
                          "trace": "phones.xlsx"}
    smoke_raw["tiers"][1]["profile"] = {"memory_mb": {"dist": "uniform", "low": 8,
                                                      "high": 4}}
    smoke_raw["training"]["timing"] = {"over_selection": 0.8, "stragglers": "wait",
                                       "dropout_probability": 1.0,
                                       "time_of_day": {"peak_hour": 25}}
    smoke_raw["assignment"] = {"unfit": "skip"}
    problems = _problems(smoke_raw)
    paths = sorted(p.split(":")[0] for p in problems)
    assert paths == ["assignment.unfit", "fleet.profile.availability", "fleet.trace",
                     "tiers[1].profile.memory_mb",
                     "training.timing.dropout_probability",
                     "training.timing.over_selection", "training.timing.stragglers",
                     "training.timing.time_of_day.peak_hour"]
    assert any("unbounded above: set `max`" in p for p in problems)
    assert any("low < high" in p for p in problems)


def test_assignment_counts_devices_fleet_wide(smoke_raw):
    smoke_raw["assignment"] = {"deadline_ms": 50}
    problems = _problems(smoke_raw)
    assert any("set the top-level `devices`" in p for p in problems)
    smoke_raw["devices"] = 20
    (problem,) = _problems(smoke_raw)
    assert "tiers[0] ('small') is a rung of `assignment`: drop count" in problem
    for t in smoke_raw["tiers"]:
        t.pop("count")
    sc = validate_scenario(smoke_raw)
    assert sc.num_devices == 20 and sc.tier_counts() == {}
    smoke_raw["tiers"][1]["profile"] = {"memory_mb": 4}
    (problem,) = _problems(smoke_raw)
    assert "drop profile" in problem
    smoke_raw["tiers"][1].pop("profile")
    smoke_raw["assignment"] = {"memory": False}
    (problem,) = _problems(smoke_raw)
    assert problem.startswith("assignment:") and "needs a limit" in problem


def test_tiers_without_size_need_assignment(smoke_raw):
    smoke_raw["tiers"][1].pop("count")
    (problem,) = _problems(smoke_raw)
    assert "tiers[1] ('large'): give `count` or `fraction`" in problem
