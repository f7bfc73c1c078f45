"""Preflight: what depends on the data and the machine fails at `validate`, not mid-run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import simulator.preflight as pf
from simulator.cli import main
from simulator.loading import ScenarioError, load_scenario, validate_scenario
from simulator.memory import estimate_memory
from simulator.preflight import preflight, preflight_all

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
GiB = 2**30


@pytest.fixture
def quickstart() -> dict:
    """The quickstart (embedded digits: 1797 images, no test split), as raw YAML."""
    return yaml.safe_load(QUICKSTART.read_text())


def _validate(tmp_path, raw, capsys, *extra: str) -> tuple[int, str, str]:
    """``siftsim validate`` in-process: exit status, stdout, stderr."""
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    status = main(["validate", str(path), *extra])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return status, out.out, out.err


def _fake_machine(monkeypatch, total: float, available: float) -> None:
    monkeypatch.setattr(pf, "machine_memory", lambda: (int(total), int(available)))


def test_splits_larger_than_the_data_are_named(tmp_path, quickstart, capsys):
    quickstart["splits"] = {"auxiliary": 0.6, "evaluation": 0.6}
    status, _, err = _validate(tmp_path, quickstart, capsys)
    assert status == 2
    assert "splits: auxiliary (0.6) + evaluation (0.6) take too much of digits " \
        "(1797 training samples, no test split)" in err


def test_more_devices_than_samples_is_named(tmp_path, quickstart, capsys):
    quickstart["tiers"][0]["count"] = 1_000_000_000
    status, _, err = _validate(tmp_path, quickstart, capsys)
    assert status == 2
    assert "tiers: 1,000,000,040 devices (low: 1,000,000,000, mid: 20, high: 20) but " \
        "only 1,257 private samples to share" in err


def test_provider_share_and_centralized_without_one_are_named(quickstart):
    quickstart["splits"]["provider"] = 1.0
    with pytest.raises(ScenarioError, match=r"splits\.provider: 1\.0 takes 1257 of"):
        preflight(validate_scenario(quickstart))
    quickstart["splits"]["provider"] = 0.0
    quickstart["training"]["mode"] = "centralized"
    with pytest.raises(ScenarioError, match=r"splits\.provider: training\.mode is "
                                            "'centralized' but the provider's share"):
        preflight(validate_scenario(quickstart))


def test_shards_that_cannot_be_cut_name_the_partition(quickstart):
    quickstart["partition"] = {"scheme": "shards", "shards_per_device": 30}
    with pytest.raises(ScenarioError, match="partition: shards: 60 devices x 30"):
        preflight(validate_scenario(quickstart))


def test_resize_beyond_the_machine_fails_before_allocating(tmp_path, quickstart, capsys,
                                                            monkeypatch):
    _fake_machine(monkeypatch, 1 * GiB, 1 * GiB)
    quickstart["dataset"]["image_size"] = 512  # 1797 x 512 x 512 floats: 1.75 GiB
    status, _, err = _validate(tmp_path, quickstart, capsys)
    assert status == 2
    assert "dataset.image_size: 1,797 digits images at 512 x 512 take 1.75 GiB" in err


def test_memory_over_the_machine_names_the_largest_item(tmp_path, quickstart, capsys,
                                                        monkeypatch):
    _fake_machine(monkeypatch, 1 * GiB, 1 * GiB)
    status, _, err = _validate(tmp_path, quickstart, capsys)
    assert status == 2
    assert "memory: about " in err and "but this machine has 1 GiB" in err
    assert "largest: processes" in err and "lower ray.num_cpus" in err


def test_memory_over_what_is_free_is_a_warning(tmp_path, quickstart, capsys,
                                               monkeypatch):
    _fake_machine(monkeypatch, 512 * GiB, 1 * GiB)
    status, out, err = _validate(tmp_path, quickstart, capsys)
    assert status == 0 and "valid (60 devices" in out
    assert err.startswith("warning: memory: about ") and "1 GiB of this machine" in err


def test_memory_estimate_follows_the_scenario(smoke_raw):
    def items(**training) -> dict[str, int]:
        raw = {**smoke_raw, "training": {**smoke_raw["training"], **training}}
        ws = pf.build_workspace(validate_scenario(raw))
        found = estimate_memory(ws, pf.ModelKit(ws))
        return {i.what.split(" (")[0]: i.bytes for i in found}

    adam = items(optimizer={"name": "adam"})
    sgd = items(optimizer={"name": "sgd", "momentum": 0.0})
    # Adam keeps two moments per weight; plain SGD none: 4 copies against 2.
    assert adam["device edges being trained"] == 2 * sgd["device edges being trained"]
    smoke_raw["observation"] = {"phases": ["inference"]}
    assert items()["observation log"] < adam["observation log"]


def test_sweep_points_are_checked_and_named(tmp_path, smoke_raw, capsys):
    smoke_raw["sweep"] = {"axes": {"tiers.0.count": [4, 500]}}
    status, _, err = _validate(tmp_path, smoke_raw, capsys)
    assert status == 2
    assert "point 1 (tiers.0.count=500): tiers: 503 devices" in err
    assert "point 0" not in err


def test_sweep_points_share_one_workspace(smoke_raw, monkeypatch):
    built = []
    real = pf.build_workspace
    monkeypatch.setattr(pf, "build_workspace", lambda sc: built.append(sc) or real(sc))
    points = [validate_scenario({**smoke_raw, "seed": s,
                                 "training": {**smoke_raw["training"], "rounds": r}})
              for s, r in ((3, 1), (3, 2), (4, 2))]
    reports = preflight_all(points)
    assert len(reports) == 3 and [sc.seed for sc in built] == [3, 4]


def test_quickstart_validates_with_a_memory_estimate(capsys):
    assert main(["validate", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    assert "quickstart.yaml: valid (60 devices" in out and "; memory ~" in out


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "scenarios").glob("*.yaml")
                                        if p.name != "quickstart.yaml"),
                         ids=lambda p: p.name)
def test_every_shipped_scenario_passes_preflight(path, shared_data, monkeypatch):
    monkeypatch.chdir(REPO)  # the scenarios' `root: ../shared/data` is repo-relative
    sc = load_scenario(path)
    if sc.sweep is None:
        assert preflight(sc, str(path)).memory_bytes > 0
    else:
        assert main(["validate", str(path)]) == 0
