#!/usr/bin/env python
"""A study of the seed's named experiments at several seeds, banked run by run in the repository,
so that it outlives the machine it runs on (issue 40's `embedding` study on both storyworld versions:
hours of training, where a replaced machine keeps only what the repository holds).

Each (experiment, seed) that ends is banked in bench/seed_studies/TAG/ as one JSON file (its row of
the trials table and its evals) within a minute of its end (--bank-every); commit the folder to keep it. A run
of this script first banks what ended in WORK/TAG since the last one, resumes the studies there
with runs not banked, then trains what is still missing: the experiments missing at the same seeds
as one study (`studies.py run A B ... --set seed=S --repeats K`, with the study's own overrides, in
a folder of its own). The comparison (best val bits per byte, 95% intervals, Holm verdicts against
the reference, the comparison plot) is taken over the banked runs alone, by the functions `compare`
uses, and written beside them.

    python bench/seed_study.py embedding --tag embedding_v2 --dataset storyworld:version=2 \\
        --set parametrization=mup --set learning_rate=2e-3 --seeds 2 --work /work/seed_study
    python bench/seed_study.py embedding --tag embedding_v2 --report   # the comparison from the bank alone

--dataset, --set and --max-iters pass to every `studies.py run` and are recorded in the bank, which
refuses others, so its runs stay alike; --cpus-per-trial and --max-concurrent pass on unrecorded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BANK = ROOT / "bench" / "seed_studies"
ENDED = ("finished", "diverged")  # runs with a final figure; a run stopped by a kill is trained again


def bank_dir(tag: str, root: Path = BANK) -> Path:
    return root / tag


def banked(bank: Path) -> dict[tuple[str, int], dict]:
    """(experiment, seed) -> its banked record."""
    out = {}
    for path in sorted(bank.glob("*_seed*.json")):
        record = json.loads(path.read_text())
        out[(record["trial"]["experiment"], int(record["trial"]["seed"]))] = record
    return out


def _records(trials: pd.DataFrame) -> list[dict]:
    return json.loads(trials.to_json(orient="records", default_handler=str, double_precision=15))


def bank_work(work: Path, bank: Path) -> list[str]:
    """Bank every run that ended in WORK's studies and is not banked yet; the files written."""
    from analysis.load import find_runs, load_runs

    have, written = banked(bank), []
    for folder in sorted(p for p in work.glob("*") if (p / "ray_results").is_dir()):
        runs = find_runs(folder)
        if not runs:
            continue
        trials, history = load_runs(runs)
        for row, record in zip(trials.itertuples(index=False), _records(trials)):
            key = (row.experiment, int(row.seed))
            if row.status not in ENDED or key in have:
                continue
            evals = history[(history["experiment"] == row.experiment) & (history["seed"] == row.seed)
                            & (history["run"] == row.run)]
            path = bank / f"{row.experiment}_seed{int(row.seed)}.json"
            path.write_text(json.dumps({"trial": record, "history": _records(evals)}, indent=1))
            have[key], written = record, [*written, path.name]
    return written


def pending(experiments: list[str], seeds: list[int], bank: Path) -> dict[str, list[int]]:
    """experiment -> the seeds it is not banked at, in the study's order."""
    have = banked(bank)
    todo = {e: [s for s in seeds if (e, s) not in have] for e in experiments}
    return {e: s for e, s in todo.items() if s}


def groups(todo: dict[str, list[int]]) -> list[tuple[list[str], int, int]]:
    """(experiments, first seed, seeds): the experiments missing at the same consecutive seeds, one
    study each (`--set seed=FIRST --repeats SEEDS`), so that a study's trials share the cores to its end."""
    runs: dict[tuple[int, int], list[str]] = {}
    for experiment, seeds in todo.items():
        start = seeds[0]
        for prev, seed in zip(seeds, [*seeds[1:], None]):
            if seed != prev + 1:  # a run of consecutive seeds ends at prev
                runs.setdefault((start, prev - start + 1), []).append(experiment)
                start = seed
    return [(names, first, count) for (first, count), names in runs.items()]


def _plans(work: Path) -> list[tuple[Path, dict]]:
    return [(p.parent, json.loads(p.read_text())) for p in sorted(work.glob("*/plan.json"))]


def train(todo: dict[str, list[int]], work: Path, bank: Path, passed: list[str], log=print,
          every_s: float = 60.0) -> None:
    """First every study WORK holds with runs not banked (resumed: a kill or the end of a session
    cut it), then the rest of TODO as new studies (`groups`), each in its own folder of WORK."""
    planned = []
    for folder, plan in _plans(work):
        pairs = {(e, plan["seed"] + k) for e in plan["experiments"] for k in range(plan["repeats"])}
        planned.append(pairs)
        if pairs - set(banked(bank)):
            _run(folder, plan, passed, bank, log, every_s)
    covered = set().union(*planned)
    todo = {e: [s for s in seeds if (e, s) not in covered] for e, seeds in todo.items()}
    for names, first, count in groups({e: s for e, s in todo.items() if s}):
        plan = {"experiments": names, "seed": first, "repeats": count}
        folder = work / f"s{first}x{count}_{'_'.join(names)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plan.json").write_text(json.dumps(plan))
        _run(folder, plan, passed, bank, log, every_s)


def _resume_flag(folder: Path) -> list[str]:
    """--resume where the folder holds a study Ray can restore; a study killed before Ray's first
    record trained nothing, and is started afresh."""
    import shutil

    from analysis.load import find_runs
    from slm_tune.tune.run import resumable

    runs = find_runs(folder) if (folder / "ray_results").is_dir() else []
    if runs and resumable(runs[-1]):
        return ["--resume"]
    shutil.rmtree(folder / "ray_results", ignore_errors=True)
    return []


def _run(folder: Path, plan: dict, passed: list[str], bank: Path, log, every_s: float = 60.0) -> None:
    """One study, its runs banked as they end (every EVERY_S seconds, and once more when it stops)."""
    resume = _resume_flag(folder)
    seeds = [plan["seed"] + k for k in range(plan["repeats"])]
    log(f"seeds {', '.join(map(str, seeds))}: {', '.join(plan['experiments'])}{' (resumed)' if resume else ''}",
        flush=True)
    command = [sys.executable, str(ROOT / "studies.py"), "run", *plan["experiments"], "--set", f"seed={plan['seed']}",
               "--repeats", str(plan["repeats"]), *passed, "--output-dir", str(folder), *resume]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            try:
                proc.wait(timeout=every_s)
            except subprocess.TimeoutExpired:
                for name in bank_work(folder.parent, bank):
                    log(f"banked {name}", flush=True)
    finally:
        if proc.poll() is None:  # this script was stopped: its study stops too (resumed next time)
            proc.terminate()
            proc.wait()
        for name in bank_work(folder.parent, bank):
            log(f"banked {name}", flush=True)
    if proc.returncode:
        sys.exit(f"studies.py run in {folder} failed ({proc.returncode}); what ended is banked")


def report(bank: Path, reference: str | None) -> str:
    """The comparison over the banked runs: the table (printed and as CSV) and the plot, beside them."""
    from analysis.export import format_table, summarize, with_significance
    from analysis.plots import plot_comparison

    records = list(banked(bank).values())
    if not records:
        sys.exit(f"nothing banked in {bank} yet")
    trials = pd.DataFrame([r["trial"] for r in records])
    history = pd.DataFrame([h for r in records for h in r["history"]])
    if reference is not None and reference not in set(trials["experiment"]):
        sys.exit(f"--reference {reference!r} is not banked in {bank}: {', '.join(sorted(set(trials['experiment'])))}")
    summary = with_significance(summarize(trials), trials, reference)
    summary.drop(columns=["entropy_bpb"]).to_csv(bank / "comparison.csv", index=False)
    title = f"{bank.name}: {len(summary)} experiments, {len(trials)} runs (banked)"
    plot_comparison(summary, history, title, bank / "comparison.png")
    return format_table(summary)


def _settings(args: argparse.Namespace, overrides: dict) -> list[str]:
    """What every run is trained with: the study's own overrides, then --set, --dataset and
    --max-iters (what a bank records and checks); the seed is the script's."""
    if any(kv.split("=")[0].strip() == "seed" for kv in args.set):
        sys.exit("--set seed=...: the seeds are this script's (--seeds N, from the experiments' own seed)")
    sets = [*(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()), *args.set]
    passed = [x for kv in sets for x in ("--set", kv)]
    for flag in ("dataset", "max_iters"):
        if getattr(args, flag) is not None:
            passed += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return passed


def _resources(args: argparse.Namespace) -> list[str]:
    """How the runs share this machine (not recorded: a new machine may have other cores)."""
    return [x for flag in ("cpus_per_trial", "max_concurrent") if getattr(args, flag) is not None
            for x in (f"--{flag.replace('_', '-')}", str(getattr(args, flag)))]


def _check_options(bank: Path, passed: list[str]) -> None:
    """A bank's runs share their settings: the first run records them, later runs must match (the
    --set's in any order)."""
    record = bank / "options.json"
    if not record.exists():
        record.write_text(json.dumps({"options": passed}, indent=1))
        return
    stored = json.loads(record.read_text())["options"]
    if sorted(zip(stored[::2], stored[1::2])) != sorted(zip(passed[::2], passed[1::2])):
        sys.exit(f"{bank} was banked with options {' '.join(stored)!r}, not {' '.join(passed)!r}: "
                 "give the same, or another --tag")


def main() -> None:
    from search_spaces import STUDIES
    from slm_tune.config import EXPERIMENT_CONFIGS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", choices=[s.name for s in STUDIES.values() if s.family is None])
    ap.add_argument("--tag", required=True, help="the bank's folder under bench/seed_studies")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per experiment, from the experiments' own (1337)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "seed_study_runs",
                    help="where the studies train, a folder per --tag")
    ap.add_argument("--bank-root", type=Path, default=BANK)
    ap.add_argument("--report", action="store_true", help="the comparison from the bank alone: no training")
    ap.add_argument("--reference", default=None)
    ap.add_argument("--dataset")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--max-iters", type=int)
    ap.add_argument("--cpus-per-trial", type=int)
    ap.add_argument("--max-concurrent", type=int)
    ap.add_argument("--bank-every", type=float, default=60.0, metavar="SECONDS", help="how often runs that ended "
                    "are banked while a study trains (default 60)")
    a = ap.parse_args()
    bank = bank_dir(a.tag, a.bank_root)
    bank.mkdir(parents=True, exist_ok=True)
    if not a.report:
        study, work = STUDIES[a.study], a.work / a.tag  # a folder per bank: two banks never share runs
        settings = _settings(a, study.overrides)
        _check_options(bank, settings)
        experiments = list(study.experiments)
        first = EXPERIMENT_CONFIGS[experiments[0]].seed
        seeds = [first + k for k in range(a.seeds)]
        for name in bank_work(work, bank):
            print(f"banked {name}")
        train(pending(experiments, seeds, bank), work, bank, [*settings, *_resources(a)], every_s=a.bank_every)
        left = pending(experiments, seeds, bank)
        if left:
            print(f"not banked (did not end): {left}")
    print(report(bank, a.reference))


if __name__ == "__main__":
    main()
