"""Several runs side by side: stacked tier tables, an HTML page, a sweep's report.

A comparison stacks the runs' tier tables, and their long leakage tables, with a
``run`` column; a sweep directory's ``sweep.parquet`` is already such a tier table
(``point`` plus the axis columns) and its points' leakage tables stack by ``point``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import figures as F
from analysis._render import Document
from analysis.matched import MATCHED, TOO_WEAK, can_match, matched_accuracy
from analysis.versus import tier_sentences, versus_best_baseline
from analysis.report import CONVENTIONS
from analysis.rundir import (Run, attacks_in, load_run, load_sweep, load_sweep_leakage,
                             sweep_axes)
from analysis.tables import collapse_note, leakage_table, tier_summary, with_ci

__all__ = ["build_sweep_report", "compare_runs", "write_comparison",
           "write_sweep_report"]


def _load(paths: Sequence[str | Path]) -> list[Run]:
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ValueError("paths is empty: give at least one run directory")
    return [load_run(p) for p in paths]


def _labels(runs: list[Run]) -> list[str]:
    """Run names; the directory name (then a counter) where names repeat."""
    names = [r.name for r in runs]
    labels = [r.name if names.count(r.name) == 1 else r.path.name for r in runs]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label}#{seen[label]}")
    return out


def _combine(runs: list[Run]) -> pd.DataFrame:
    frames = [r.tiers.assign(run=label, run_dir=str(r.path))
              for r, label in zip(runs, _labels(runs), strict=True)]
    out = pd.concat(frames, ignore_index=True, sort=False)
    first = ["run", "tier"]
    return out[first + [c for c in out.columns if c not in first]]


def _combine_leakage(runs: list[Run]) -> pd.DataFrame | None:
    """The runs' long leakage tables stacked with ``run`` (None: none attacked)."""
    frames = [r.leakage.assign(run=label)
              for r, label in zip(runs, _labels(runs), strict=True)
              if r.leakage is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def compare_runs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The runs' tier tables stacked, with ``run`` (a unique label) and ``run_dir``.

    Columns a run lacks (e.g. leakage where no adversary ran) are NaN for its rows.
    """
    return _combine(_load(paths))


def write_comparison(paths: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``comparison.html`` (self-contained) into ``out_dir``; returns its path."""
    runs = _load(paths)
    frame = _combine(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = _labels(runs)
    doc = Document("siftsim comparison: " + ", ".join(labels))
    doc.heading("Runs")
    doc.table(pd.DataFrame([_run_row(r, label) for r, label in zip(runs, labels,
                                                                    strict=True)]))
    doc.heading("Per-tier results")
    collapsed = collapse_note(frame)
    if collapsed:
        doc.note(collapsed)
    leakage = _combine_leakage(runs)
    doc.table(tier_summary(frame, leakage),
              "Utility, cost, leakage and information per tier")
    attacked = bool(attacks_in(leakage))
    if attacked:
        doc.table(leakage_table(leakage), "Leakage per run, tier and attack")
    doc.heading("Figures")
    _frontiers(doc, frame, attacked)
    doc.heading("Metric conventions")
    doc.definitions(CONVENTIONS)
    path = out / "comparison.html"
    path.write_text(doc.html(), encoding="utf-8")
    return path


def _frontiers(doc: Document, frame: pd.DataFrame, attacked: bool,
               group: str = "run") -> None:
    """The privacy-utility frontier where leakage exists, and the cost-utility one."""
    plots = [(None, "Privacy")] if attacked else []
    plots.append(("bytes_per_sample", "Cost (bytes sent per sample)"))
    if not attacked:
        doc.note("No leakage recorded: only the cost-utility frontier is drawn.")
    for leakage, kind in plots:
        try:
            doc.figure(F.privacy_utility_frontier(frame, leakage=leakage, group=group),
                       f"{kind}-utility frontier (a point per {group} and tier)")
        except (ValueError, KeyError) as err:
            doc.note(f"{kind}-utility frontier skipped: {err}")


def build_sweep_report(table: pd.DataFrame, title: str = "sweep",
                       leakage: pd.DataFrame | None = None) -> Document:
    """A sweep table (one row per point and tier) as a report document.

    ``leakage``: the points' long leakage tables stacked with ``point``
    (:func:`analysis.rundir.load_sweep_leakage`); without it, no leakage sections.
    """
    axes = sweep_axes(table)
    doc = Document(f"siftsim sweep report: {title}")
    doc.heading("Points")
    head = [c for c in ("point", *axes, "status", "error") if c in table.columns]
    points = table[head].drop_duplicates(subset=["point"] if "point" in head else None)
    doc.table(points.reset_index(drop=True))
    if "status" in table and (table["status"].astype(str) != "complete").any():
        doc.note("Some points did not complete: they are left out of the figures.")
    done = table[table["status"].astype(str) == "complete"] if "status" in table \
        else table
    doc.heading("Per-tier results")
    collapsed = collapse_note(done)
    if collapsed:
        doc.note(collapsed)
    summary = tier_summary(done, leakage)
    if axes:  # point, then its axis values, then the tier's results
        rest = summary.drop(columns=["point"], errors="ignore")
        summary = pd.concat([summary[["point"]] if "point" in summary else None,
                             done[axes].reset_index(drop=True), rest], axis=1)
    doc.table(summary, "Utility, cost, leakage and information per tier")
    attacked = bool(attacks_in(leakage))
    if attacked:
        doc.table(leakage_table(leakage), "Leakage per point, tier and attack")
    if can_match(table):
        _matched_section(doc, table)
    doc.heading("Figures")
    group = axes[0] if axes else "point"
    if attacked:
        _leakage_vs_budget(doc, done, group)
    _frontiers(doc, done, attacked, group=group)
    doc.heading("Metric conventions")
    doc.definitions(CONVENTIONS)
    return doc


SIFTFUNNEL = "siftfunnel"   # the method this project studies: said in words per tier
_MATCHED_LABELS = {"ssim": "SSIM", "attack_acc": "attack acc", "nn_ident": "NN ident"}


def _matched_section(doc: Document, table: pd.DataFrame) -> None:
    """Each defense's worst-case leakage at the undefended accuracy minus 1, 3, 5
    points (:func:`analysis.matched.matched_accuracy`)."""
    doc.heading("Privacy at matched accuracy")
    try:
        frame = matched_accuracy(table)
    except ValueError as err:
        doc.note(f"Not computed: {err}")
        return
    doc.paragraph(
        "Per tier, each defense's points (its strengths) sorted by accuracy; at the "
        "accuracy of the undefended point minus k points, the worst-case leakage of "
        "the two points that bracket it, interpolated linearly in accuracy. "
        "'cannot reach': even its weakest setting costs more than k points; 'range "
        "too weak': even its strongest costs less, the values shown are those of its "
        "strongest setting (at 'accuracy of values'), not a match. Failed and "
        "collapsed points are left out. Intervals: "
        + "; ".join(frame.attrs.get("interval_notes", [])) + "; a replicate whose "
        "resampled range misses its own target is left out of a matched interval "
        "('replicates in CI').")
    doc.table(_matched_view(frame), "Worst-case leakage at matched accuracy "
              "(accuracy cost k in points)")
    try:
        doc.figure(F.matched_accuracy_ranges(table),
                   "Each defense's strengths: worst-case SSIM against accuracy cost, "
                   "per tier (the table reads every line at the dotted costs)")
    except ValueError as err:   # e.g. other axes besides the defense's
        doc.note(f"Defense ranges figure skipped: {err}")
    if SIFTFUNNEL in set(frame["defense"]):
        versus = versus_best_baseline(table, SIFTFUNNEL)
        doc.paragraph(f"{SIFTFUNNEL} against the best baseline (the other defense "
                      "leaking least at that accuracy), worst-case SSIM; the interval "
                      "is that of the paired difference (same resampled devices):")
        doc.items(tier_sentences(versus))


def _matched_view(frame: pd.DataFrame) -> pd.DataFrame:
    columns = list(frame.columns)
    keys = columns[:columns.index("defense")]  # other axes, when the sweep has them
    out = frame[[*keys, "defense", "tier", "drop"]].rename(columns={"drop": "k"})
    out["target accuracy"] = frame["target_accuracy"]
    out["status"] = frame["status"]
    out["points"] = frame["points"]
    out["settings"] = [" .. ".join(dict.fromkeys(s for s in pair if s)) or "-"
                       for pair in zip(frame["lower_setting"], frame["upper_setting"],
                                       strict=True)]
    shown = frame["status"].isin([MATCHED, TOO_WEAK])
    out["accuracy of values"] = frame["reached_accuracy"].where(shown)
    for metric in frame.attrs.get("metrics", []):
        col = f"{metric}_worst_case"
        out[f"{_MATCHED_LABELS.get(metric, metric)} worst case (95% CI)"] = [
            with_ci(*v) for v in zip(frame[col], frame[f"{col}_lo"],
                                     frame[f"{col}_hi"], strict=True)]
    out["replicates in CI"] = frame["replicates_used"]  # those that matched too
    return out


def _leakage_vs_budget(doc: Document, frame: pd.DataFrame, group: str) -> None:
    """Tier leakage against edge compute and bytes sent, a line per point's group."""
    for budget in ("macs", "bytes_per_sample"):
        try:
            doc.figure(F.tier_leakage_vs_budget(frame, group=group, budget=budget),
                       f"Leakage vs edge budget ({budget}) per tier, a line per {group}")
        except (ValueError, KeyError) as err:
            doc.note(f"Leakage vs {budget} skipped: {err}")


def write_sweep_report(path: str | Path, out_dir: str | Path | None = None
                       ) -> tuple[Path, Path]:
    """``report.html`` and ``report.md`` for a sweep directory (default: in it)."""
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else path
    out.mkdir(parents=True, exist_ok=True)
    doc = build_sweep_report(load_sweep(path), path.name, load_sweep_leakage(path))
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(doc.html(), encoding="utf-8")
    md_path.write_text(doc.markdown(out), encoding="utf-8")
    return html_path, md_path


def _run_row(run: Run, label: str) -> dict[str, object]:
    sc, m = run.scenario, run.manifest
    training = sc.get("training") or {}
    adv = sc.get("adversary") or {}
    return {"run": label, "directory": str(run.path),
            "dataset": (sc.get("dataset") or {}).get("name", "?"),
            "seed": m.get("seed"), "status": m.get("status", "?"),
            "devices": int(run.devices.shape[0]),
            "training": (f"{training.get('mode', '?')}, "
                         f"{training.get('rounds', '?')} rounds"),
            "adversary": (adv.get("threat_model", "?") if run.attacks else "none"),
            "git revision": m.get("git_revision") or "unknown"}
