"""Exported records: only the records travel, a sweep continues from its export."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_sweep import FakeRunner, _tiny

from simulator.cli import main
from simulator.export import export_records
from simulator.sweep import run_sweep


def test_a_sweep_exports_its_finished_points_and_continues_from_the_export(tmp_path):
    raw = _tiny(axes={"seed": [4, 5, 6]})
    runner = FakeRunner(fail_seed=5)
    folder = run_sweep(raw, tmp_path / "sweep", parallel=1, runner=runner)
    (folder / "p000" / "checkpoints").mkdir()          # bulk that must stay behind
    (folder / "p000" / "checkpoints" / "round.pt").write_bytes(b"x" * 1000)
    runs = export_records(folder, tmp_path / "export")
    assert [r.name for r in runs] == ["p000", "p002"]   # p001 failed: not exported
    export = tmp_path / "export"
    assert sorted(p.name for p in export.iterdir()) == [
        "p000", "p002", "sweep.csv", "sweep.json", "sweep.parquet"]
    assert sorted(p.name for p in (export / "p000").iterdir()) == [
        "manifest.json", "tiers.parquet"]
    # the export is a sweep folder: resuming it runs only the point it lacks, also on
    # a machine that keeps the data and the runs elsewhere (places are not identity)
    again = FakeRunner()
    elsewhere = raw | {"output_dir": "/elsewhere/runs"}
    elsewhere["dataset"] = raw["dataset"] | {"root": "/elsewhere/data"}
    run_sweep(elsewhere, export, parallel=1, runner=again)
    assert again.calls == ["smoke-p001"]
    table = pd.read_parquet(export / "sweep.parquet")
    assert set(table["status"]) == {"complete"}
    # exporting again into it brings it up to date instead of refusing
    assert len(export_records(export, tmp_path / "export2")) == 3
    assert len(export_records(folder, tmp_path / "export2")) == 2
    # the sweep grows by an appended value: its export takes the new point too
    run_sweep(raw | {"sweep": {"axes": {"seed": [4, 5, 6, 7]}}}, folder, parallel=1,
              runner=FakeRunner())
    assert [r.name for r in export_records(folder, export)] == [
        "p000", "p001", "p002", "p003"]
    record = json.loads((export / "sweep.json").read_text())
    assert [p["values"]["seed"] for p in record["points"]] == [4, 5, 6, 7]
    # a shrunk or changed sweep is still another sweep
    with pytest.raises(FileExistsError, match="something other"):
        export_records(tmp_path / "export2", export)


def test_a_run_exports_its_records_and_a_foreign_destination_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"name": "r", "status": "complete"}))
    (run / "scenario.yaml").write_text("name: r\n")
    pd.DataFrame({"tier": ["a"]}).to_parquet(run / "tiers.parquet")
    pd.DataFrame({"tier": ["a"]}).to_csv(run / "tiers.csv")
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "scenario.yaml", "tiers.parquet"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(other)]) == 2
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "holds something other than an export" in err
    assert "neither a run directory" in err
    with pytest.raises(FileExistsError):
        export_records(run, other)
