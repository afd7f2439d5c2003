"""The scaling fit of stored runs, written: experiments/scaling_fit.json and its plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.load import find_runs, load_runs
from analysis.scaling import fit_scaling, format_fit, scaling_runs
from analysis.scaling_plots import plot_scaling
from slm_tune.errors import UserError
from slm_tune.files import atomic_write, write_json


def fit_stored(output_dir, studies: list[str] | None = None, budget: float | None = None,
               bootstrap: int = 200, storage_path: str | None = None, metric: str | None = None) -> dict[str, Any]:
    """Fit every stored run under OUTPUT_DIR (or those of `studies`), write
    experiments/scaling_fit.json and .png, and return them with the printed section."""
    output_dir = Path(output_dir)
    runs_dirs = find_runs(output_dir, studies, storage_path)
    if not runs_dirs:
        which = f" of {', '.join(studies)}" if studies else ""
        raise UserError(f"no stored runs{which} under {output_dir}; run the scaling study first "
                        "(`python studies.py scaling`) or point --output-dir at the folder you ran it in")
    trials, _ = load_runs(runs_dirs)
    fit = fit_scaling(scaling_runs(trials, metric), bootstrap=bootstrap)
    prediction = fit.budget(budget) if budget is not None else None
    doc = {**fit.to_dict(), "studies": sorted({p.name for p in runs_dirs}), "budget": prediction}
    exp_dir = output_dir / "experiments"
    json_path = write_json(exp_dir / "scaling_fit.json", doc)
    png_path = atomic_write(exp_dir / "scaling_fit.png", lambda tmp: plot_scaling(fit, tmp, prediction))
    return {"fit": fit, "json": json_path, "plot": png_path, "text": format_fit(fit, prediction)}
