"""The one registry of metrics: each figure a run reports or a study's table holds, with the
direction that is better, its label and its unit. Search, export, scaling, tracking and plots
take their metrics and their words for them from here.

`reported` metrics are what a trial reports at an eval (and the trial's own `final_`/`best_`
figures in the trials table); `summary` metrics are the comparison table's columns; `search`
marks what a search may minimise with --metric; `objective` what --objective and --constraint
take (`report` names the key a trial's reports carry it in, when that is not its name; `alias` a
shorter name users may type); `before_training` marks figures the config alone decides, which a
constraint checks when a point is sampled; `per_token` marks losses per token, which compare
runs only at one vocabulary (bits per byte compare any).
"""

from __future__ import annotations

from dataclasses import dataclass

from slm_tune.errors import UserError, closest


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "min" or "max": which way is better
    label: str
    unit: str
    summary: bool = False  # a column of the comparison table (its mean and std over repeats)
    search: bool = False  # a search may optimise it
    per_token: bool = False  # a loss per token: comparable only at one vocabulary
    tracked: str = ""  # "eval", or "eval,train": the reports MLflow logs it from
    objective: bool = False  # --objective / --constraint may name it
    report: str = ""  # the key of a trial's final report that carries it (default: its name)
    alias: str = ""  # a shorter name for --objective and --constraint
    before_training: bool = False  # decided by the config alone (slm_tune.model.counts)

    @property
    def report_key(self) -> str:
        return self.report or self.name

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


_ALL = [
    Metric("total_params", "min", "parameters", "", summary=True, objective=True, alias="params",
           before_training=True),
    Metric("non_embedding_params", "min", "non-embedding parameters", "", objective=True, before_training=True),
    Metric("flops_per_token", "min", "training FLOPs per token", "FLOPs", objective=True, before_training=True),
    Metric("training_time_s", "min", "training time", "s", summary=True, objective=True, report="elapsed_s"),
    # generation at batch 1 on the trial's threads with the key/value cache, timed once training has ended (greedy)
    Metric("ms_per_token", "min", "generation time per token", "ms", summary=True, objective=True),
    Metric("final_train_loss", "min", "final training loss", "nats per token", summary=True, per_token=True),
    Metric("final_val_loss", "min", "final validation loss", "nats per token", summary=True, per_token=True),
    Metric("best_val_loss", "min", "best validation loss", "nats per token", summary=True, search=True,
           per_token=True, tracked="eval"),
    Metric("best_val_bpb", "min", "best validation bits per byte", "bits per byte", summary=True, search=True,
           tracked="eval", objective=True),
    Metric("best_val_bpb_context", "min", "best validation bits per byte, windows' second halves", "bits per byte",
           summary=True, objective=True),
    Metric("tokens_per_s", "max", "training speed", "tokens/s", summary=True, tracked="eval,train", objective=True),
    Metric("val_bpb", "min", "validation bits per byte", "bits per byte", search=True, tracked="eval"),
    Metric("val_bpb_context", "min", "validation bits per byte, windows' second halves", "bits per byte",
           tracked="eval"),
    Metric("val_loss", "min", "validation loss", "nats per token", search=True, per_token=True, tracked="eval"),
    # the evaluation's own noise: the standard error of an eval's mean over its windows (disjoint, so independent)
    Metric("val_loss_se", "min", "validation loss standard error", "nats per token", per_token=True, tracked="eval"),
    Metric("val_bpb_se", "min", "validation bits per byte standard error", "bits per byte", tracked="eval"),
    Metric("val_bpb_context_se", "min", "validation bits per byte standard error, windows' second halves",
           "bits per byte", tracked="eval"),
    Metric("best_val_bpb_se", "min", "standard error of the best validation bits per byte (evaluation)",
           "bits per byte", summary=True),
    Metric("train_loss", "min", "training loss", "nats per token", per_token=True, tracked="eval,train"),
    Metric("lr", "min", "learning rate", "", tracked="eval,train"),
]
METRICS: dict[str, Metric] = {m.name: m for m in _ALL}
SUMMARY_METRICS = [m.name for m in _ALL if m.summary]
SEARCH_METRICS = [m.name for m in _ALL if m.search]
OBJECTIVE_METRICS = [m.name for m in _ALL if m.objective]
ALIASES = {m.alias: m.name for m in _ALL if m.alias}
# the scaling fit's L, in order of preference: the first that every run reports
SCALING_METRICS = ("best_val_bpb_context", "best_val_bpb")


def tracked(kind: str) -> list[str]:
    """The metrics MLflow logs from a report of this kind ("eval" or "train")."""
    return [m.name for m in _ALL if kind in m.tracked.split(",")]


def get_metric(name: str, among: list[str] | tuple[str, ...] | None = None, flag: str = "--metric") -> Metric:
    """The metric of this name (among these names), or a one-line error listing them."""
    names = list(among) if among is not None else list(METRICS)
    name = ALIASES.get(name, name) if ALIASES.get(name) in names else name
    if name not in names:
        raise UserError(f"{flag} {name!r} is not one of {', '.join(names)}{closest(name, names)}")
    return METRICS[name]
