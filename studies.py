#!/usr/bin/env python
"""slm-tune's command line: a thin layer that parses flags and calls the library.

    python studies.py list                      the named experiments
    python studies.py details baseline          every setting, parameters, FLOPs
    python studies.py quick                     run a study (vocab, embedding, ..., all)
    python studies.py run lr_high               one experiment as a one-trial study
    python studies.py search lr                 a hyperparameter search (lr, shape, compute, --space FILE)
    python studies.py transfer mup_base --to n_embd=512  search at the proxy shape, train the best at the target
    python studies.py compare                   rebuild the comparison files from storage
    python studies.py fit --budget 1e15         fit a scaling law to the stored runs, predict
    python studies.py sample baseline           text from a trained model
    python studies.py interactive               a menu
"""

from __future__ import annotations

import argparse
import json
import gc
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from slm_tune.errors import UserError, closest
from slm_tune.search_options import SCHEDULERS, SEARCH_ALGS

COMMANDS = ("list", "details", "run", "search", "transfer", "build", "compare", "fit", "sample", "export", "coord-check", "interactive")


def _out(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _registry(args: argparse.Namespace):
    from slm_tune.config import EXPERIMENT_CONFIGS, load_experiments_file

    if getattr(args, "experiments_file", None):
        return load_experiments_file(args.experiments_file)
    return dict(EXPERIMENT_CONFIGS)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _horizon_exponent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 2:  # nan fails too; above 2 a run 10x longer would train at 1/100 of the rate
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 2 (0: the search's rate everywhere)")
    return value


def _flops(text: str) -> float:
    """'3e14' -> 3e14: a positive number of FLOPs."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of FLOPs (e.g. 3e14)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of FLOPs (e.g. 3e14)")
    return value


def _duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s' or a number of seconds -> seconds."""
    import re

    t = text.strip().lower()
    try:
        return _positive_seconds(float(t))
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if not t or not parts:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 2h, 90m, 1h30m or 600 (seconds)")
    h, m, sec = (float(x) if x else 0.0 for x in parts.groups())
    return _positive_seconds(3600 * h + 60 * m + sec)


def _positive_seconds(value: float) -> float:
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} must be a positive duration")
    return value


def _add_run_options(p: argparse.ArgumentParser, schedulers: tuple[str, ...] = ("fifo", "asha"),
                     scheduler: str | None = "fifo", default_text: str = "fifo") -> None:
    p.add_argument("--max-concurrent", type=_positive_int, help="trials at once (default: CPUs // cpus-per-trial)")
    p.add_argument("--cpus-per-trial", type=_positive_int, default=None,
                   help="CPU threads per trial (default: 1 or 2, whichever finishes the study sooner, "
                        "docs/bench/cpu-split.md; all CPUs for a single trial)")
    p.add_argument("--max-iters", type=_positive_int, help="override every experiment's max_iters")
    p.add_argument("--reference", help="the experiment the comparison measures differences from (default: baseline "
                                       "when the study has it, else the best)")
    p.add_argument("--dataset", help="storyworld (default), tinystories, hf:owner/name or a local path")
    p.add_argument("--output-dir", default=".", help="where results land (default: current directory)")
    p.add_argument("--repeats", type=_positive_int, help="runs per experiment, with seeds seed, seed+1, ... (default 1); "
                   "with --resume, a study that ended with fewer seeds trains the next ones")
    p.add_argument("--scheduler", choices=schedulers, default=scheduler,
                   help="; ".join(f"{k}: {SCHEDULERS[k]}" for k in schedulers) + f" (default: {default_text})")
    p.add_argument("--resume", action="store_true", help="continue the interrupted study in --output-dir")
    p.add_argument("--address", help="connect to this Ray cluster instead of starting a local one")
    p.add_argument("--storage-path", help="where Ray keeps the study (default: OUTPUT_DIR/ray_results; s3://, gs://)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override a setting of every experiment, e.g. --set n_layer=6 (repeatable)")
    p.add_argument("--experiments-file", help=EXPERIMENTS_FILE_HELP)
    p.add_argument("--cache-dir", help="token cache (default: ~/.cache/slm_tune or $SLM_TUNE_CACHE)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial (default: 2)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="trials write TensorBoard files: tensorboard --logdir OUTPUT_DIR/ray_results (default: on)")
    p.add_argument("--mlflow", nargs="?", const="default", metavar="URI",
                   help="log the study to MLflow: a tracking URI, or by default sqlite:///OUTPUT_DIR/mlflow.db "
                        "(needs pip install -e .[mlflow])")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and no usage block) like every other error here."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `python {self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from search_spaces import STUDIES

    parser = Parser(prog="studies.py", description="Hyperparameter studies of small GPT models on Ray Tune.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    p = sub.add_parser("list", help="list the named experiments and studies")
    p.add_argument("--experiments-file", help=EXPERIMENTS_FILE_HELP)
    p = sub.add_parser("details", help="every setting of one experiment")
    p.add_argument("name", help="the experiment")
    p.add_argument("--experiments-file", help=EXPERIMENTS_FILE_HELP)
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="show it with this setting changed (repeatable)")
    p = sub.add_parser("run", help="run one experiment as a one-trial study, or several as one study")
    p.add_argument("name", nargs="+", help="the experiment(s) (python studies.py list); several run as one study, "
                                            "run_NAME1_NAME2...")
    _add_run_options(p)
    _add_search_command(sub)
    for study in STUDIES.values():
        p = sub.add_parser(study.name, help=f"study: {study.description}".replace("%", "%%"))
        _add_run_options(p)
    p = sub.add_parser("interactive", help="a menu: list, details, run, compare")
    p.add_argument("--output-dir", default=".", help=OUTPUT_DIR_READ_HELP)
    _add_analysis_commands(sub)
    return parser


def _add_search_command(sub) -> None:
    from search_spaces import search_files

    p = sub.add_parser("search", help="a hyperparameter search: a named space (%s) or --space FILE"
                       % ", ".join(search_files()))
    _add_search_options(p)
    p = sub.add_parser("transfer", help="tune small, train large: a search at its proxy shape, then its best "
                                        "settings trained once at the target shape (--to n_embd=512)")
    _add_search_options(p)
    p.add_argument("--to", action="append", metavar="KEY=VALUE", required=True,
                   help="the target's shape (repeatable), e.g. --to n_embd=512 --to n_layer=8; --repeats N trains "
                        "it N times")
    _add_build_command(sub)
    p.add_argument("--against", metavar="STUDY", help="a study in --output-dir that tuned the target directly: its "
                                                       "best configuration is retrained at the target's seeds (a stage "
                                                       "of its own) and the report compares result and compute with it")


def _add_build_command(sub) -> None:
    from workflows.build_plan import HORIZON_EXPONENT, SWEEP_DESIGN, SWEEP_DESIGNS

    p = sub.add_parser("build", help="from a compute budget to the best model it buys: a muP proxy search, a scaling "
                                     "sweep and fit, the compute-optimal target trained and exported")
    p.add_argument("name", nargs="?", help="the proxy's named search (default: mup_base, unless --space is given)")
    p.add_argument("--space", help="a TOML or JSON search space for the proxy instead of a named search")
    p.add_argument("--budget", type=_flops, required=True, metavar="FLOPS",
                   help="training FLOPs for the whole build (search, sweep and target), e.g. 3e14")
    p.add_argument("--shares", type=_shares, default=None, metavar="SEARCH,SWEEP",
                   help="the search's and the sweep's shares of the budget (default: 0.1,0.2; the target gets the rest)")
    p.add_argument("--against-simple", action="store_true",
                   help="also spend the whole budget two simple ways (the seed's baseline settings; the default "
                        "settings sized at 20 tokens a parameter), 2 or more seeds each, for verdicts")
    p.add_argument("--seed", type=int, help="the proxy search's sampler seed (default: chosen and recorded)")
    p.add_argument("--num-samples", type=_positive_int, default=64,
                   help="trials the proxy search may sample before its share of the budget runs out (default: 64)")
    p.add_argument("--min-iters", type=_positive_int, default=50,
                   help="the fewest iterations of a sweep run or the target, twice that of a proxy trial (default: 50)")
    p.add_argument("--horizon-exponent", type=_horizon_exponent, default=HORIZON_EXPONENT, metavar="BETA",
                   help="each sweep run and the target longer than the search's trials take its best rate x (their "
                        "iterations / the search's)^-BETA, as the best rate falls with training length (default: "
                        f"{HORIZON_EXPONENT:g}: the search's rate everywhere; 0.45 was tried and hurt on real text: "
                        "docs/bench/horizon-rate.md)")
    p.add_argument("--sweep", choices=SWEEP_DESIGNS, default=SWEEP_DESIGN,
                   help="the sweep's sizes: 'budget' (default) up to the size the compute left trains at about 20 "
                        "tokens a parameter, 12x or more in parameters (shrunk below the proxy at small budgets); "
                        "'fixed': the proxy, 2x wide, 2x wide and deep, whatever the budget (builds before 'budget')")
    _add_run_options(p, schedulers=("asha",), scheduler="asha", default_text="asha for the search, fifo elsewhere")


def _shares(text: str):
    from workflows.build_plan import Shares

    try:
        search, sweep = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two shares, e.g. 0.1,0.2") from None
    try:
        return Shares(search, sweep)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_search_options(p) -> None:
    from search_spaces import search_files

    p.add_argument("name", nargs="?", help=f"a named search: {', '.join(search_files())}")
    p.add_argument("--space", help="a TOML or JSON search space: base = \"EXPERIMENT\", then e.g. "
                                   "learning_rate = { loguniform = [1e-5, 3e-3] } (docs/search.md)")
    p.add_argument("--num-samples", type=_positive_int, default=16, help="trials to sample (default: 16)")
    p.add_argument("--search-alg", choices=tuple(SEARCH_ALGS),
                   help="; ".join(f"{k}: {v}" for k, v in SEARCH_ALGS.items()) + " (random with --scheduler pbt)")
    p.add_argument("--metric", default="best_val_bpb",
                   help="what the search minimises: best_val_bpb (default), val_bpb, or best_val_loss/val_loss "
                        "when the vocabulary is fixed")
    p.add_argument("--objective", action="append", metavar="METRIC",
                   help="optimise this (again for several: a Pareto front): %s" % ", ".join(_objective_names()))
    p.add_argument("--constraint", action="append", metavar="EXPR",
                   help="e.g. \"params<=5e6\": on params, non_embedding_params or flops_per_token it holds for every "
                        "sampled trial; on a measured figure it filters the results")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="the Optuna storage optuna-dashboard reads the search from (default: "
                        "sqlite:///OUTPUT_DIR/experiments/optuna.db; none: keep none)")
    p.add_argument("--seed", type=int, help="the sampler's seed, so a search can be repeated (default: chosen "
                                            "and recorded in study.json)")
    p.add_argument("--time-budget", type=_duration, help="stop sampling and running after this long, e.g. 2h")
    p.add_argument("--budget", type=_flops, metavar="FLOPS",
                   help="stop sampling and running once the trials have trained this many FLOPs between them, e.g. 3e14")
    _add_run_options(p, schedulers=tuple(SCHEDULERS), scheduler=None,
                     default_text="asha with one objective, fifo with several: the replay benchmark's best, docs/search.md")


def _objective_names() -> list[str]:
    from slm_tune.metrics import METRICS, OBJECTIVE_METRICS

    return [METRICS[m].alias or m for m in OBJECTIVE_METRICS]


EXPERIMENTS_FILE_HELP = "a TOML or JSON file of custom experiments (docs/studies.md)"
OUTPUT_DIR_READ_HELP = "where the studies were run (default: current directory)"
STORAGE_READ_HELP = ("read the studies from this storage path (default: OUTPUT_DIR/ray_results); s3://... and "
                     "gs://... are copied into OUTPUT_DIR/ray_results first, so nothing needs mounting")


def _add_analysis_commands(sub) -> None:
    from slm_tune.metrics import SCALING_METRICS

    p = sub.add_parser("compare", help="rebuild the comparison files from the stored studies")
    p.add_argument("--output-dir", default=".", help=OUTPUT_DIR_READ_HELP)
    p.add_argument("--study", action="append", help="only these studies (repeatable)")
    p.add_argument("--storage-path", help=STORAGE_READ_HELP)
    p.add_argument("--reference", help="the experiment every difference is measured from (default: baseline when "
                                       "compared, else the best)")
    p.add_argument("--against", metavar="NAME", help="with repeats: how many runs would resolve NAME's difference "
                                                     "from the reference (80%% power, 5%% two-sided)")
    p = sub.add_parser("fit", help="fit a scaling law L(N, D) = E + A/N^alpha + B/D^beta to the stored runs")
    p.add_argument("--output-dir", default=".", help=OUTPUT_DIR_READ_HELP)
    p.add_argument("--study", action="append", help="only these studies (repeatable), e.g. --study scaling")
    p.add_argument("--budget", type=float, help="a compute budget in FLOPs (C = 6ND): the best N and D, and the loss")
    p.add_argument("--bootstrap", type=_positive_int, default=200, help="refits for the intervals (default 200)")
    p.add_argument("--metric", choices=SCALING_METRICS,
                   help="L: best_val_bpb_context (the second half of each validation window, where the corpus's "
                        "entropy is the floor; the default when every run has it) or best_val_bpb (whole windows)")
    p.add_argument("--storage-path", help=STORAGE_READ_HELP)
    p = sub.add_parser("export", help="a trained model in the Hugging Face format (transformers loads it as is)")
    p.add_argument("name", help="the experiment (or search trial) whose best_model_NAME.pt to export")
    p.add_argument("--output-dir", default=".", help="where the best_model file is (default .)")
    p.add_argument("--to", help="the export folder (default OUTPUT_DIR/hf/NAME)")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload it to this Hub repository (owner/name)")
    p = sub.add_parser("coord-check", help="muP's coordinate check: each layer's output against width, sp and muP")
    p.add_argument("--experiment", default="optimal_fast", help="the depth, heads, vocabulary and data (default optimal_fast)")
    p.add_argument("--widths", default="64,128,256,512,1024", help="comma-separated widths (default 64 to 1024)")
    p.add_argument("--steps", type=_positive_int, default=5, help="Adam steps recorded (default 5)")
    p.add_argument("--lr", type=float, default=3e-3, help="the learning rate of every width (default 3e-3)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="change a setting of the experiment (repeatable)")
    p.add_argument("--dataset", help="storyworld (default), tinystories, hf:owner/name or a local path")
    p.add_argument("--experiments-file", help=EXPERIMENTS_FILE_HELP)
    p.add_argument("--output-dir", default=".", help="where experiments/coord_check.png and its CSVs land")
    p = sub.add_parser("sample", help="generate text with a trained model")
    p.add_argument("name", help="the experiment (or search trial) whose best_model_NAME.pt generates")
    p.add_argument("--output-dir", default=".", help="where the best_model file is (default .)")
    p.add_argument("--prompt", default="Once upon a time", help="the text to continue")
    p.add_argument("--max-new-tokens", type=_positive_int, default=120, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0: the most likely token)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed")


def cmd_list(args: argparse.Namespace) -> int:
    from search_spaces import STUDIES
    from slm_tune.describe import experiments_table

    _out(experiments_table(_registry(args)))
    _out("\nstudies:")
    for s in STUDIES.values():
        _out(f"  {s.name:<13} {s.description}")
    from search_spaces import search_description, search_files

    _out("\nsearches (python studies.py search NAME):")
    for name in search_files():
        _out(f"  {name:<13} {search_description(name)}")
    return 0


def cmd_details(args: argparse.Namespace) -> int:
    from slm_tune.config import ExperimentConfig, parse_overrides
    from slm_tune.describe import experiment_details

    c = ExperimentConfig.from_name(args.name, _registry(args), **parse_overrides(args.overrides))
    _out(experiment_details(c))
    return 0


def _study_overrides(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    from slm_tune.config import parse_overrides

    overrides = dict(defaults)
    explicit = parse_overrides(args.overrides)
    if args.max_iters:
        overrides["max_iters"] = args.max_iters
        # A short run keeps a proportionate warmup and at least one mid-run evaluation.
        if "warmup_iters" not in explicit:
            overrides["warmup_iters"] = min(overrides.get("warmup_iters", 100), args.max_iters // 10)
        if "eval_interval" not in explicit:
            overrides["eval_interval"] = min(overrides.get("eval_interval", 100), max(1, args.max_iters // 2))
    if args.dataset:
        overrides["dataset"] = args.dataset
    overrides.update(explicit)
    return overrides


def run_experiments(args: argparse.Namespace, study_name: str, experiments: Sequence[str],
                    defaults: dict[str, Any], registry=None) -> int:
    from slm_tune.tune.run import study_configs

    configs = study_configs(experiments, registry or _registry(args), _study_overrides(args, defaults))
    if getattr(args, "reference", None) and args.reference not in configs:
        raise UserError(f"--reference {args.reference!r} is not one of this study's experiments"
                        f"{closest(args.reference, configs)}: {', '.join(configs)}")
    return _run_study(args, study_name, configs, {n: c.max_iters for n, c in configs.items()})


def _run_study(args: argparse.Namespace, study_name: str, configs, max_iters: dict[str, int],
               **search: Any) -> int:
    from analysis.export import export_live, export_study
    from slm_tune.tune.callbacks.live_export import ResultsExporter
    from slm_tune.tune.callbacks.progress import StudyProgress
    from slm_tune.tune.run import StudyInterrupted, StudyRun, run_study, study_lock

    output_dir = Path(args.output_dir)
    _check_writable(output_dir)
    tracker = _mlflow_tracker(args, output_dir)
    run = StudyRun(
        study=study_name, configs=configs, output_dir=output_dir, storage_path=args.storage_path,
        repeats=args.repeats or 1, more_seeds=bool(args.resume and getattr(args, "more_seeds", False)),
        cpus_per_trial=args.cpus_per_trial,
        max_concurrent=args.max_concurrent, scheduler=args.scheduler, resume=args.resume,
        address=args.address, verbose=args.verbose, cache_dir=args.cache_dir,
        max_failures=args.max_failures, log=_err, command=list(sys.argv),
        callbacks=[StudyProgress(max_iters=max_iters), ResultsExporter(output_dir, study_name, tracker, write=export_live),
                   *([tracker] if tracker else [])],
        tensorboard=args.tensorboard, **search,
    )
    with study_lock(output_dir):
        try:
            results = run_study(run)
        except StudyInterrupted as stopped:
            _export_partial(stopped.results, output_dir, study_name)
            _err(f"interrupted: {stopped}; finished trials and checkpoints are kept. Continue with: "
                 f"{_resume_command()}")
            return 130
        written = export_study(results, output_dir, study_name, command=sys.argv,
                               reference=getattr(args, "reference", None))
    _report_written(written)
    for files in written.get("searches", {}).values():
        _report_search(files)
    failed = [r for r in results if r.error is not None]
    if failed:  # every file is written; the exit code tells scripts that some trial did not end well
        _err(f"{len(failed)} of {len(results)} trial(s) errored: the reasons are above, and in each trial's error.txt")
    return 1 if failed else 0


def _report_search(files: dict) -> None:
    for what, label in (("plot", "plot"), ("importance", "importance"), ("feasible", "constraints"),
                        ("pareto", "Pareto front"), ("pareto_plot", "Pareto plot")):
        if what in files:
            _err(f"{label}: {files[what]}")
    entries = files.get("entries", [])
    if "best" in files and entries:
        more = f" (and {len(entries) - 1} more: {', '.join(entries[1:])})" if len(entries) > 1 else ""
        _err(f"best trial as an experiment: {files['best']}; run it with: python studies.py run {entries[0]} "
             f"--experiments-file {files['best']}{more}")
    if "within_noise" in files:
        _err(f"within the noise of the best: {files['within_noise']}")


def _mlflow_tracker(args: argparse.Namespace, output_dir: Path):
    if not getattr(args, "mlflow", None):
        return None
    from slm_tune.tune.callbacks.mlflow import MlflowTracker, check_mlflow, default_tracking_uri

    check_mlflow()
    uri = None if args.mlflow == "default" else args.mlflow  # None: OUTPUT_DIR/mlflow.db, wherever the study is
    _err(f"MLflow: {uri or default_tracking_uri(output_dir)}")
    return MlflowTracker(uri, output_dir)


def _resume_command() -> str:
    args = [a for a in sys.argv[1:] if a != "--resume"]
    return " ".join(["python", "studies.py", *args, "--resume"])


def _report_written(written: dict) -> None:
    for reason in written["refused"]:
        _err(f"warning: {reason}")
    _err(f"results: {written['csv']}")
    _out(written["table"])


def _export_partial(results, output_dir: Path, study_name: str) -> None:
    from analysis.export import export_study

    try:
        export_study(results, output_dir, study_name, command=sys.argv)
    except UserError:
        pass  # nothing reported yet: nothing to export


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".slm-tune-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {str(path)!r} is not writable ({e.strerror}); "
                        "choose another with --output-dir") from None


def cmd_study(args: argparse.Namespace) -> int:
    from search_spaces import get_study

    study = get_study(args.command)
    if study.family is not None:  # its own experiments; --max-iters shrinks them in proportion
        registry = {**_registry(args), **study.configs(args.max_iters)}
        args = argparse.Namespace(**{**vars(args), "max_iters": None})
        return run_experiments(args, study.name, study.experiments, study.overrides, registry)
    return run_experiments(args, study.name, study.experiments, study.overrides)


def cmd_search(args: argparse.Namespace) -> int:
    """A search: a named space or a file, the study-wide flags applied to its base."""
    space, search = _search_setup(args)
    return _run_study(args, space.name, {space.base.name: space.base}, {}, search=space, **search)


def _search_setup(args: argparse.Namespace):
    """(the search space, the search's StudyRun settings) from the search flags."""
    from search_spaces import get_search
    from slm_tune.config import parse_overrides
    from slm_tune.objectives import parse_constraint, parse_objectives
    from slm_tune.space import check_metric, load_space_file

    if bool(args.name) == bool(args.space):
        raise UserError("give a named search (lr, shape, compute) or --space FILE, not both or neither; "
                        "e.g. `python studies.py search lr --num-samples 16`")
    registry = _registry(args)
    explicit = parse_overrides(args.overrides)
    derived = _study_overrides(args, {})
    hard = {k: v for k, v in derived.items() if k in explicit or k in ("max_iters", "dataset")}
    soft = {k: v for k, v in derived.items() if k not in hard}
    if args.space:
        space = load_space_file(args.space, registry, hard, soft)
    else:
        space = get_search(args.name, registry, hard, soft)
    for key in space.pinned:
        _err(f"{key} is fixed at {hard[key]} by the command line, not searched")
    objectives = parse_objectives(args.objective or [])
    if objectives and args.metric != "best_val_bpb":
        raise UserError("give --metric or --objective, not both: --objective is the general form "
                        "(e.g. --objective best_val_bpb --objective params)")
    metric = objectives[0] if objectives else check_metric(args.metric, space)
    constraints = tuple(parse_constraint(k) for k in args.constraint or [])
    search_alg = args.search_alg or "random"  # the measured default (StudyRun.search_alg)
    return space, dict(num_samples=args.num_samples, search_alg=search_alg, sampler_seed=args.seed,
                       metric=metric, objectives=tuple(objectives), constraints=constraints,
                       optuna_storage=args.optuna_storage, time_budget_s=args.time_budget,
                       flops_budget=args.budget)


def cmd_transfer(args: argparse.Namespace) -> int:
    """Tune small, train large: the search at its proxy shape (resumed or skipped with --resume
    when stored), then its best trial's settings at the --to shape (--repeats times), then the
    report (experiments/transfer_SEARCH_report.json)."""
    from analysis.transfer import best_config, report_text, transfer_report
    from slm_tune.config import load_experiments_file, parse_overrides
    from slm_tune.files import write_text

    targets = parse_overrides(args.to)
    space, search = _search_setup(argparse.Namespace(**{**vars(args), "repeats": 1}))
    _check_target(space, targets)
    if args.against:
        best_config(Path(args.output_dir), args.against, args.storage_path)  # a study to compare with, before anything runs
    output_dir, target = Path(args.output_dir), f"transfer_{space.name}"
    stage_args = argparse.Namespace(**{**vars(args), "repeats": 1})
    code = _run_stage(stage_args, space.name, lambda a: _run_study(
        a, space.name, {space.base.name: space.base}, {}, search=space, **search))
    if code:
        return code
    best_file = output_dir / "experiments" / f"search_{space.name}_best.toml"
    entry = f"search_{space.name}_best"
    registry = load_experiments_file(best_file, _registry(args)) if best_file.is_file() else {}
    if entry not in registry:
        raise UserError(f"search {space.name} stored no best trial ({best_file} has none): no trial finished with "
                        "a result; see the trials' error.txt files, then run the transfer again")
    config = registry[entry].replace(name=target, description=f"{entry} at {_shape_text(targets)}",
                                     **_carried_base(registry[entry], targets))
    target_args = argparse.Namespace(**{**vars(args), "scheduler": "fifo", "max_iters": None})
    code = _run_stage(target_args, target, lambda a: _run_study(a, target, {target: config}, {target: config.max_iters}))
    if code:
        return code
    retrain = _retrain_against(target_args, target, config.seed) if args.against else None
    if isinstance(retrain, int):
        return retrain
    report = transfer_report(output_dir, space.name, target, targets, args.against, retrain)
    written = write_text(output_dir / "experiments" / f"{target}_report.json", json.dumps(report, indent=2, default=str))
    _err(f"transfer report: {written}")
    _out(report_text(report))
    return 0


def _retrain_against(args: argparse.Namespace, target: str, seed: int) -> str | int:
    """The stage that makes --against a comparison of like with like: the directly tuned study's
    best configuration retrained at the target's seeds (its best trial was picked on the same eval
    windows it is scored on, so alone it is optimistic). The stage's name, or a failed stage's code."""
    from analysis.transfer import best_config

    config = best_config(Path(args.output_dir), args.against, args.storage_path)
    stage = f"{target}_vs_{args.against}"
    config = config.replace(name=stage, seed=seed, description=f"{args.against}'s best trial, retrained")
    code = _run_stage(args, stage, lambda a: _run_study(a, stage, {stage: config}, {stage: config.max_iters}))
    return code or stage


def cmd_build(args: argparse.Namespace) -> int:
    """From a compute budget to the best model it buys (workflows/build.py), its report
    (experiments/build_report.json and .png), its export and a sample."""
    from workflows.build import STUDIES, BuildSettings, run_build
    from workflows.build_plan import Shares, check_budget

    if args.max_iters:
        raise UserError("build sets every run's length from --budget; --max-iters does not apply (give --min-iters "
                        "for the shortest run instead)")
    name = args.name or (None if args.space else "mup_base")
    space, _ = _search_setup(argparse.Namespace(**{**vars(args), "name": name, "repeats": 1, "metric": "best_val_bpb",
                                                   "objective": None, "constraint": None, "search_alg": None,
                                                   "optuna_storage": None, "time_budget": None}))
    from slm_tune.data.corpora import corpus_fingerprint

    shares = args.shares or Shares()
    if not (args.resume and (Path(args.output_dir) / "experiments" / "build_plan.json").is_file()):
        # a resumed build's budget was checked when it started, and _check_build_plan holds it to that start
        # (a rule added since, such as the sweep's gap budgets, must not strand a build half done)
        check_budget(space.config_for({}), args.budget, shares, args.min_iters, args.num_samples, args.sweep)
    corpus_fingerprint(space.base.dataset)  # a corpus that is not there: refused before any stage starts
    registry, dataset = _registry(args), {"dataset": args.dataset} if args.dataset else {}
    settings = BuildSettings(Path(args.output_dir), args.budget, space, registry["baseline"].replace(**dataset),
                             registry[space.base.name].replace(**dataset), shares, args.repeats or 1, args.against_simple,
                             args.num_samples, args.min_iters, args.storage_path,
                             horizon_exponent=args.horizon_exponent, sweep_design=args.sweep)
    _check_build_plan(settings, args.resume)
    built = run_build(settings, _BuildStages(args), _err)
    if built.code:
        return built.code
    return _build_outputs(built, STUDIES)


def _check_build_plan(s, resume: bool) -> None:
    """experiments/build_plan.json: what the build was started with. A --resume with another budget,
    other shares or another proxy would mix two builds' stages: refused before anything runs."""
    from slm_tune.files import read_json, write_json

    from workflows.build import BEFORE, plan_changes
    from workflows.build_plan import sweep_sizes

    plan = {"budget": s.budget, "shares": [s.shares.search, s.shares.sweep], "space": s.space.name,
            "proxy": s.space.config_for({}).to_dict(), "samples": s.samples, "min_iters": s.min_iters,
            "horizon_exponent": s.horizon_exponent, "sweep": s.sweep_design,
            "sweep_sizes": [[c.n_layer, c.n_embd] for _, c in sweep_sizes(s.space.config_for({}), s.budget, s.shares,
                                                                             s.sweep_design)]}
    path = s.output_dir / "experiments" / "build_plan.json"
    if resume and path.is_file():
        stored = read_json(path)
        changed = plan_changes(stored, plan)
        if changed:
            flags = [f"--horizon-exponent {stored.get(k, BEFORE[k]):g}" if k == "horizon_exponent"
                     else f"--sweep {stored.get(k, BEFORE[k])}" for k in changed if k in BEFORE]
            hint = f" ({' '.join(flags)})" if flags else ""
            raise UserError(f"--resume: this build was started with other {', '.join(changed)} ({path}); resume it "
                            f"with the same options{hint}, or give another --output-dir for a new build")
    write_json(path, plan)


class _BuildStages:
    """build's stages as studies of this command line (workflows.build.Stages)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def search(self, space, flops_budget: float, num_samples: int) -> int:
        a = argparse.Namespace(**{**vars(self.args), "repeats": 1, "max_iters": None})
        search = dict(num_samples=num_samples, search_alg="random", sampler_seed=self.args.seed, metric="best_val_bpb",
                      objectives=(), constraints=(), optuna_storage="none", time_budget_s=None, flops_budget=flops_budget)
        return _run_stage(a, space.name, lambda a: _run_study(a, space.name, {space.base.name: space.base}, {},
                                                                  search=space, **search))

    def train(self, study: str, configs, repeats: int) -> int:
        a = argparse.Namespace(**{**vars(self.args), "repeats": repeats, "scheduler": "fifo", "max_iters": None})
        return _run_stage(a, study, lambda a: _run_study(a, study, configs, {n: c.max_iters for n, c in configs.items()}))


def _build_outputs(built, studies: dict[str, str]) -> int:
    """The report, its plot, the target's export (with the hf extra) and a sample of its text."""
    from analysis.build_plots import plot_build
    from analysis.build_report import build_report, report_text
    from analysis.samples import sample_from_file
    from slm_tune.files import atomic_write, write_json

    s = built.settings
    report = build_report(built, studies)
    model = s.output_dir / f"best_model_{studies['target']}.pt"
    report["export"] = _export_build(model, s.output_dir / "hf" / studies["target"], report)
    report["sample"] = sample_from_file(model) if model.is_file() else None
    written = write_json(s.output_dir / "experiments" / "build_report.json", report)
    plot = atomic_write(s.output_dir / "experiments" / "build_report.png", lambda tmp: plot_build(report, tmp))
    _err(f"build report: {written}; plot: {plot}")
    _out(report_text(report))
    return 0


def _export_build(model: Path, to: Path, report: dict[str, Any]) -> dict[str, Any]:
    from slm_tune.hf.export import export_model

    if not model.is_file():
        return {"path": None, "why": f"{model} was not written"}
    try:
        done = export_model(model, to, {"study": "build_target"})
    except UserError as e:  # the hf extra is not installed
        return {"path": None, "why": str(e)}
    return {"path": str(done.path), "class": done.hf_class, "max_logit_diff": done.max_logit_diff}


def _run_stage(args: argparse.Namespace, study: str, run: Callable[[argparse.Namespace], int]) -> int:
    """One stage of a workflow: run it; with --resume, resume it where it was cut off, start it
    where it never started, and skip it where it finished."""
    from analysis.load import find_runs
    from slm_tune.storage import read_study_file
    from slm_tune.tune.run import resumable, seeds_stored, unfinished_trials

    if not args.resume:
        return run(args)
    runs = find_runs(Path(args.output_dir), [study], args.storage_path)
    if runs and not resumable(runs[-1]):  # killed before Tune's first record: it never started
        return run(argparse.Namespace(**{**vars(args), "resume": False}))
    more = bool(runs) and getattr(args, "more_seeds", False) and (args.repeats or 1) > seeds_stored(
        read_study_file(runs[-1]))  # seeds asked beyond what the finished stage has: it runs again to add them
    if runs and not unfinished_trials(runs[-1]) and not more:
        _err(f"{study}: finished before, kept as it is")
        return 0
    return run(argparse.Namespace(**{**vars(args), "resume": bool(runs)}))


def _check_target(space, targets: dict[str, Any]) -> None:
    """A target is the proxy made larger: refused in one line before anything runs where it is
    narrower or shallower than the proxy, or narrower than muP's base width, or not a model."""
    proxy = space.config_for({})
    for key, what in (("n_embd", "narrower"), ("n_layer", "shallower")):
        if key in targets and key not in space.searched and targets[key] < getattr(proxy, key):
            raise UserError(f"--to {key}={targets[key]} is {what} than the proxy ({key}={getattr(proxy, key)}): "
                            "a transfer trains a larger model than the one searched")
    width = targets.get("n_embd", proxy.n_embd)
    if proxy.parametrization == "mup" and width < proxy.mup_base_width:
        raise UserError(f"the target's width {width} is narrower than muP's base width ({proxy.mup_base_width}); "
                        "give --to n_embd=N with N at least the base")
    if any(k in space.searched for k in targets):
        raise UserError(f"--to {', '.join(k for k in targets if k in space.searched)}: the search searches it; "
                        "the target takes the search's best value of what it searches")
    proxy.replace(**_carried_base(proxy, targets))  # a setting the model refuses (heads that do not divide the width, ...)


def _carried_base(proxy, targets: dict[str, Any]) -> dict[str, Any]:
    """The target's settings. Under muP with mup_base_head_size=0 the base head size is
    mup_base_width / n_head, so a target with other heads would redefine the base the proxy was
    tuned at: the proxy's base head size is carried to the target instead."""
    if proxy.parametrization == "mup" and not proxy.mup_base_head_size and "n_head" in targets \
            and "mup_base_head_size" not in targets:
        return {**targets, "mup_base_head_size": proxy.mup_base_width // proxy.n_head}
    return targets


def _shape_text(targets: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in targets.items())


def cmd_run(args: argparse.Namespace) -> int:
    from slm_tune.config import ExperimentConfig

    registry = _registry(args)
    names = list(dict.fromkeys(args.name))  # a name given twice runs once
    for name in names:
        ExperimentConfig.from_name(name, registry)  # unknown names fail here, with suggestions
    return run_experiments(args, "run_" + "_".join(names), names, {})


def cmd_compare(args: argparse.Namespace) -> int:
    from analysis.export import compare

    written = compare(Path(args.output_dir), studies=args.study, storage_path=args.storage_path,
                      reference=args.reference)
    _report_written(written)
    for files in written.get("searches", {}).values():
        _report_search(files)
    if args.against:
        from analysis.significance import power_text

        _out(power_text(written["trials"], written["summary"]["reference"].dropna().iloc[0], args.against))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from analysis.scaling_export import fit_stored

    written = fit_stored(Path(args.output_dir), studies=args.study, budget=args.budget, bootstrap=args.bootstrap,
                         storage_path=args.storage_path, metric=args.metric)
    _err(f"scaling fit: {written['json']}; plot: {written['plot']}")
    _out(written["text"])
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from analysis.samples import sample_from_file

    path = Path(args.output_dir) / f"best_model_{args.name}.pt"
    _out(sample_from_file(path, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slm_tune.files import read_json
    from slm_tune.hf.export import export_model, require_hf

    require_hf()
    output_dir = Path(args.output_dir)
    best = output_dir / f"best_model_{args.name}.pt"
    results = output_dir / "experiments" / f"{args.name}_results.json"
    facts = {}
    if results.is_file():  # what the study recorded beside the file: its study, best figures, the corpus's entropy
        r = read_json(results)
        facts = {k: r[k] for k in ("study", "entropy_bpb") if r.get(k) is not None}
    done = export_model(best, Path(args.to) if args.to else output_dir / "hf" / args.name, facts)
    _out(f"exported {best} as {done.hf_class} to {done.path} (logits within {done.max_logit_diff:.1e} of the model's)")
    if args.push_to_hub:
        from slm_tune.hf.hub import push_to_hub

        try:
            _out(f"pushed to {push_to_hub(done.path, args.push_to_hub)}")
        except UserError as e:
            _err(f"error: {e}")
            return 1
    return 0


def cmd_coord_check(args: argparse.Namespace) -> int:
    from analysis.coord_check_export import write_coord_check
    from slm_tune.config import ExperimentConfig, parse_overrides
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train.coord_check import CoordCheck

    try:
        widths = tuple(sorted({int(w) for w in args.widths.split(",")}))
    except ValueError:
        raise UserError(f"--widths {args.widths!r} is not a list of whole numbers; e.g. --widths 64,128,256") from None
    overrides = {"batch_size": 8, "block_size": 64, "precision": "float32", **parse_overrides(args.overrides)}
    if args.dataset:
        overrides["dataset"] = args.dataset
    base = ExperimentConfig.from_name(args.experiment, _registry(args), **overrides)
    check = CoordCheck(base, widths, args.steps, args.lr)
    for width in widths:  # every shape refused before anything runs (heads that do not divide it, ...)
        check.config("mup", width)
    data = prepare_tokens(base.dataset, base.vocab_size, base.data_fraction)
    table = write_coord_check(check, data.train, Path(args.output_dir), progress=_err)
    _out(table.to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
    _out(f"wrote {Path(args.output_dir) / 'experiments' / 'coord_check.png'} and its CSVs")
    return 0


def cmd_interactive(args: argparse.Namespace, read: Callable[[str], str] = input) -> int:
    from analysis.interactive import Menu

    return Menu(output_dir=Path(args.output_dir), read=read, write=_out, dispatch=main).loop()


HANDLERS = {"list": cmd_list, "details": cmd_details, "run": cmd_run, "search": cmd_search, "transfer": cmd_transfer,
            "build": cmd_build,
            "compare": cmd_compare, "fit": cmd_fit,
            "sample": cmd_sample, "export": cmd_export, "coord-check": cmd_coord_check, "interactive": cmd_interactive}


def main(argv: Sequence[str] | None = None) -> int:
    from search_spaces import STUDIES

    argv = list(sys.argv[1:] if argv is None else argv)
    known = set(COMMANDS) | set(STUDIES)
    if argv and not argv[0].startswith("-") and argv[0] not in known:
        _err(f"error: unknown command or study {argv[0]!r}{closest(argv[0], known)}; "
             f"commands: {', '.join(COMMANDS)}; studies: {', '.join(STUDIES)}")
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    # seeds to add (run.py): only for a --repeats the user gave with --resume (a workflow's stages
    # carry this flag from the user's command, whatever repeats they pass)
    args.more_seeds = bool(getattr(args, "resume", False) and getattr(args, "repeats", None))
    if not args.command:
        parser.print_help()
        return 2
    try:
        return HANDLERS.get(args.command, cmd_study)(args)
    except UserError as e:
        _err(f"error: {e}")
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _err("interrupted: nothing already computed is lost; run the same command (with --resume if a study "
             "had started) to continue")
        return 130


if __name__ == "__main__":
    code = main()
    # Everything is written and closed. The interpreter's last garbage collections would walk
    # every object torch, Ray and pandas made (0.9 s after a study); frozen objects are skipped.
    gc.freeze()
    sys.exit(code)
