"""One run, one report: self-contained ``report.html`` and a Markdown ``report.md``.

Everything comes from the run directory's records (:func:`analysis.rundir.load_run`);
nothing is recomputed and nothing needs Ray, so a report can be rebuilt anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import figures as F
from analysis._render import Document
from analysis.fleet import has_participation, participation_summary, stragglers
from analysis.rundir import WORST_CASE, Run, is_sweep_dir, load_run
from analysis.search import search_table, searched_attacks, settings
from analysis.tables import (collapse_note, information_table, leakage_table,
                             tier_summary, worst_case_devices)

__all__ = ["CONVENTIONS", "build_report", "write_report"]

CONVENTIONS: list[tuple[str, str]] = [
    ("SSIM", "11x11 Gaussian window, sigma 1.5, K = (0.01, 0.03), data range 1, valid "
     "region only, mean over channels, per image on [0, 1] images (Wang et al. 2004; "
     "equals scikit-image structural_similarity with gaussian_weights=True, sigma=1.5, "
     "use_sample_covariance=False, data_range=1). Lower = more private."),
    ("PSNR", "per image, peak 1, MSE clamped at >= 1e-10, then averaged. Lower = more "
     "private."),
    ("MSE", "per element (not summed over channels), per image, on [0, 1]. Higher = "
     "more private."),
    ("Attack accuracy", "an independent evaluation classifier (trained on data neither "
     "the victims nor the attacker's decoder used) classifies the reconstructions; "
     "shown beside chance and its accuracy on real images."),
    ("Recognisable / NN ident", "fraction of images with SSIM > 0.3; nearest-neighbour "
     "identification: is the gallery image nearest the reconstruction the true one?"),
    ("Intervals", "95% Student-t intervals: per device over its images, per tier over "
     "its devices' means."),
    ("Worst case", "per device and metric, the value of the most leaking attack "
     "(lowest MSE; highest SSIM, PSNR, attack accuracy, ...); per tier, the mean of "
     "its devices' worst cases. All leakage values are read from leakage.parquet."),
    ("dcor2_bc", "bias-corrected (U-centred) distance correlation dCor^2(x, z) on a "
     "fixed-size subsample; comparable across feature shapes."),
    ("mi_nats / mi_paper_nats", "neural estimates of I(x; z) in nats (lower bounds; "
     "estimator in mi_estimator); the paper variant's sigmoid critic cannot exceed "
     "1 nat."),
    ("nonzero_per_sample", "effective information volume: non-zero elements of z per "
     "sample (nonzero_fraction: per element)."),
    ("Cost", "MACs per sample counted with torch FlopCounterMode (FLOPs / 2); deployed "
     "edge parameters; bytes = float32 elements of z x 4; latency = compute / device "
     "speed + bytes / uplink bandwidth (simulated)."),
]


def write_report(run_or_path: Run | str | Path, out_dir: str | Path | None = None
                 ) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` for a run; returns both paths.

    Parameters
    ----------
    run_or_path : Run or path
        A loaded :class:`Run` or a run directory (a sweep directory gets a sweep
        report: points, per-tier table and the frontier over points).
    out_dir : path, optional
        Where to write (default: the run directory). Markdown figures go to
        ``out_dir/report_figures/``.
    """
    if not isinstance(run_or_path, Run) and is_sweep_dir(run_or_path):
        from analysis.compare import write_sweep_report  # compare imports this module
        return write_sweep_report(run_or_path, out_dir)
    run = run_or_path if isinstance(run_or_path, Run) else load_run(run_or_path)
    out = Path(out_dir) if out_dir is not None else run.path
    out.mkdir(parents=True, exist_ok=True)
    doc = build_report(run)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(doc.html(), encoding="utf-8")
    md_path.write_text(doc.markdown(out), encoding="utf-8")
    return html_path, md_path


def build_report(run: Run) -> Document:
    """The report as a :class:`~analysis._render.Document` (render it as you like)."""
    doc = Document(f"siftsim report: {run.name}")
    status = run.manifest.get("status", "unknown")
    if status != "complete":
        doc.note(f"Run status is {status!r}"
                 + (f" ({run.manifest['error']})" if run.manifest.get("error") else "")
                 + ": the tables hold what was recorded before it stopped.")
    _scenario(doc, run)
    _threat_model(doc, run)
    _tables(doc, run)
    _attack_search(doc, run)
    _participation(doc, run)
    _figures(doc, run)
    doc.heading("Metric conventions")
    doc.definitions(CONVENTIONS)
    return doc


def _spec(spec: dict[str, Any] | None) -> str:
    """``name(key=value, ...)`` without unset values."""
    if not spec:
        return "-"
    args = ", ".join(f"{k}={v}" for k, v in spec.items()
                     if k != "name" and v is not None)
    return f"{spec.get('name', '?')}({args})" if args else str(spec.get("name", "?"))


def _scenario(doc: Document, run: Run) -> None:
    sc, m = run.scenario, run.manifest
    training = dict(sc.get("training") or {})
    optimizer = training.pop("optimizer", None)
    devices = dict(zip(run.tiers["tier"].astype(str), run.tiers.get("devices", []),
                       strict=False))
    doc.heading("Scenario")
    doc.definitions([
        ("Dataset", _spec(sc.get("dataset"))),
        ("Backbone", _spec((sc.get("model") or {}).get("backbone"))),
        ("Devices per tier", ", ".join(f"{t}: {n}" for t, n in devices.items())
         or "-"),
        ("Training", _training(training, optimizer)),
        *_assignment(sc.get("assignment"), run.devices),
        ("Seed", str(m.get("seed", sc.get("seed", "?")))),
        ("Git revision", str(m.get("git_revision") or "unknown")),
        ("Python / versions", f"{m.get('python', '?')}; " + ", ".join(
            f"{k} {v}" for k, v in (m.get("versions") or {}).items())),
        ("Started / finished", f"{m.get('started', '?')} / {m.get('finished', '-')}"),
        ("Phases (seconds)", ", ".join(f"{k} {v.get('seconds', '?')}" for k, v in
                                       (m.get("phases") or {}).items()) or "-"),
    ])
    tiers = sc.get("tiers") or []
    if tiers:
        doc.table(pd.DataFrame([{
            "tier": t.get("name"), "devices": devices.get(str(t.get("name")), np.nan),
            "encoder": _spec(t.get("encoder")), "defense": _spec(t.get("defense")),
            **(t.get("profile") or {})} for t in tiers]), "Tiers as configured")


def _training(training: dict[str, Any], optimizer: dict[str, Any] | None) -> str:
    extra = {k: v for k, v in training.items() if k not in ("mode", "rounds")}
    text = f"mode {training.get('mode', '?')}, rounds {training.get('rounds', '?')}"
    if extra:
        text += "; " + ", ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
    return text + (f"; optimizer {_spec(optimizer)}" if optimizer else "")


def _threat_model(doc: Document, run: Run) -> None:
    adv = run.scenario.get("adversary") or {}
    doc.heading("Threat model")
    attacks = adv.get("attacks") or []
    if not (adv.get("enabled") and attacks) and not run.attacks:
        doc.note("No adversary ran: this report covers utility and cost only; leakage, "
                 "frontier, information and reconstruction figures are omitted. Run "
                 "`siftsim attack RUN_DIR` to add them.")
        return
    doc.definitions([
        ("Curious party", "the shared cloud, observing the transmitted features z"),
        ("Threat model", str(adv.get("threat_model", "?"))),
        ("Phases observed", ", ".join(adv.get("phases") or []) or "-"),
        ("Attacks", "; ".join(
            f"{a.get('label') or a.get('name')}: {_spec(a)}"
            + (f" [threat model {a['threat_model']}]" if a.get("threat_model") else "")
            for a in attacks) or "-"),
        ("Images per device", str(adv.get("images_per_device", "-"))),
        ("Auxiliary data", _spec({"name": "auxiliary",
                                   **(adv.get("auxiliary") or {})})),
    ])
    if not run.attacks:
        doc.note("The adversary was configured but no leakage was recorded (the attack "
                 "phase did not finish).")


def _tables(doc: Document, run: Run) -> None:
    doc.heading("Per-tier results")
    collapsed = collapse_note(run.tiers)
    if collapsed:
        doc.note(collapsed)
    doc.table(tier_summary(run.tiers, run.leakage),
              "Utility, cost, leakage and information per tier")
    if run.attacks:
        doc.table(leakage_table(run.leakage), "Leakage per tier and attack")
        info = information_table(run.tiers)
        if len(info.columns) > 1:
            doc.table(info, "Information carried by z")
    worst = worst_case_devices(run.devices, run.leakage)
    doc.heading("Worst-case device per tier")
    if len(worst):
        doc.table(worst, f"Criterion: {worst['criterion'].iloc[0]}")
    else:
        doc.paragraph("No device records to rank.")


def _attack_search(doc: Document, run: Run) -> None:
    """Every grid point of the searched attacks and their leakage against each
    searched parameter; nothing for a run whose attacks searched nothing."""
    attacks = searched_attacks(run.budgets)
    if not attacks:
        return
    doc.heading("Attacker's budget (searched attacks)")
    doc.paragraph("Each searched attack ran once per grid point. Per tier, the "
                  "leakage tables above hold the point with the highest mean SSIM "
                  "(WORST); what each point spent: auxiliary images, queries to the "
                  "victim's edge, optimisation steps and CPU seconds.")
    doc.table(search_table(run.budgets),
              "Every grid point per tier: setting, budget and tier leakage")
    for attack in attacks:
        rows = run.budgets[run.budgets["attack"].astype(str) == attack]
        for param in settings(rows).columns:
            _add(doc, f"{attack}: tier SSIM (95% CI) against {param}; the star is "
                 "the point kept",
                 lambda a=attack, p=param: F.leakage_vs_attack_budget(
                     run.budgets, p, attack=a))


def _assignment(spec: dict[str, Any] | None,
                devices: pd.DataFrame) -> list[tuple[str, str]]:
    """The ``Assignment`` line: rungs by budget, and how many devices fit none."""
    if not spec:
        return []
    limits = [] if spec.get("deadline_ms") is None else \
        [f"deadline {spec['deadline_ms']} ms"]
    limits += ["memory"] if spec.get("memory") else []
    unable = int(devices["unable"].sum()) if "unable" in devices else 0
    return [("Assignment", f"by budget: {spec.get('rule', '?')} ("
             f"{' and '.join(limits) or 'no limit'}); {unable} devices fit no rung "
             f"({'dropped' if spec.get('unfit') != 'smallest' else 'given the smallest'})"
             )]


def _participation(doc: Document, run: Run) -> None:
    """Who trained how often, who straggled, next to utility and leakage."""
    if not has_participation(run.devices):
        return
    doc.heading("Participation and stragglers")
    doc.table(participation_summary(run.devices, run.leakage),
              "Per rung: rounds selected, completed, straggled and dropped per device, "
              "devices that never completed a round, accuracy and leakage")
    late = stragglers(run.devices, run.leakage)
    if len(late):
        doc.table(late, "Devices that straggled most")
    else:
        doc.paragraph("No device straggled: every selected device finished in time.")
    _add(doc, "Rounds completed and straggled per device, per rung",
         lambda: F.participation_bars(run.devices))


def _varying_budgets(devices: pd.DataFrame) -> list[str]:
    """Hardware budgets that vary within a rung (a fleet drawn from distributions or
    traces): the per-device figures draw them as clouds with binned trends."""
    out = []
    for col in ("compute_gflops", "memory_mb"):
        if col in devices and "tier" in devices and \
                (devices.groupby("tier")[col].nunique() > 1).any():
            out.append(col)
    return out


def _add(doc: Document, caption: str, draw: Callable[[], Figure]) -> None:
    """Draw one figure; a figure the data cannot support becomes a note, not a crash."""
    try:
        doc.figure(draw(), caption)
    except (ValueError, KeyError) as err:
        doc.note(f"Figure skipped ({caption}): {err}")


def _figures(doc: Document, run: Run) -> None:
    d, t, r = run.devices, run.tiers, run.rounds
    doc.heading("Figures")
    _add(doc, "Accuracy per tier", lambda: F.tier_bars(t, "accuracy"))
    _add(doc, "Accuracy against edge compute, per device",
         lambda: F.leakage_vs_budget(d, "accuracy", "macs"))
    fleet = _varying_budgets(d)
    for budget in fleet:
        _add(doc, f"Accuracy against the device's {budget}, per device (binned trend "
             "per rung)", lambda b=budget: F.leakage_vs_budget(d, "accuracy", b))
    if len(r) and "loss" in r:
        _add(doc, "Training loss per round", lambda: F.training_curves(r))
    if not run.attacks:
        doc.paragraph("No leakage recorded: accuracy and cost figures only.")
        return
    # which attacks exist comes from the long table; the figures draw its wide views
    main = WORST_CASE if WORST_CASE in run.attacks else run.attacks[0]
    leak = f"ssim_{main}"
    for budget in ("macs", "bytes_per_sample", "latency_ms", *fleet):
        _add(doc, f"Leakage ({leak}) against {budget}, per device",
             lambda b=budget: F.leakage_vs_budget(d, leak, b))
    for attack in run.attacks:
        _add(doc, f"SSIM per tier, attack {attack}",
             lambda a=attack: F.tier_bars(t, f"ssim_{a}"))
    if (run.leakage["metric"] == "attack_acc").any():
        _add(doc, f"Attack accuracy per tier, attack {main}",
             lambda: F.tier_bars(t, f"attack_acc_{main}"))
    _add(doc, "Privacy-utility frontier over tiers (dashed: Pareto front)",
         lambda: F.privacy_utility_frontier(t, group="defense"))
    for info in ("mi_nats", "dcor2_bc", "nonzero_per_sample"):
        if info in t and np.isfinite(t[info].astype(float)).any():
            _add(doc, f"{info} against edge compute, per tier",
                 lambda i=info: F.information_vs_budget(t, i, "macs"))
    _reconstructions(doc, run)


def _reconstructions(doc: Document, run: Run) -> None:
    long = run.leakage
    for (attack, tier), arrays in sorted(run.reconstructions.items()):
        row = long[(long["scope"] == "tier") & (long["tier"].astype(str) == tier)
                   & (long["attack"] == attack) & (long["metric"] == "ssim")]
        ssim = f", tier mean SSIM {float(row['value'].iloc[0]):.3f}" if len(row) else ""
        _add(doc, f"Reconstructions: {attack} on tier {tier}{ssim}",
             lambda a=arrays, at=attack, ti=tier: F.reconstruction_grid(
                 a["original"], a["reconstruction"], title=f"{at} on {ti}"))
