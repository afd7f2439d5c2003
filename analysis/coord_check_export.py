"""The coordinate check's files: run it (slm_tune/train/coord_check.py), then
experiments/coord_check.csv (every layer's mean |output| per parametrization, width and step),
coord_check_slopes.csv (each curve's log-log slope against width) and coord_check.png."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from slm_tune.files import write_text


def slope_table(rows: list[dict]) -> pd.DataFrame:
    """One row per layer and step, the sp and muP slopes side by side."""
    from slm_tune.train.coord_check import slopes

    found = slopes(rows)
    table = pd.DataFrame([{"layer": layer, "step": step, "parametrization": p, "slope": v}
                          for (p, layer, step), v in found.items()])
    wide = table.pivot_table(index=["layer", "step"], columns="parametrization", values="slope").reset_index()
    return wide.rename(columns={"sp": "sp_slope", "mup": "mup_slope"})


def write_coord_check(check, tokens, output_dir: Path, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run the check and write its files; the slope table."""
    from analysis.coord_check_plots import plot_coord_check
    from slm_tune.train.coord_check import run_coord_check

    rows = run_coord_check(check, tokens, progress)
    folder = Path(output_dir) / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "coord_check.csv", pd.DataFrame(rows).to_csv(index=False))
    table = slope_table(rows)
    write_text(folder / "coord_check_slopes.csv", table.to_csv(index=False, float_format="%.3f"))
    plot_coord_check(rows, folder / "coord_check.png", check.lr)
    return table
