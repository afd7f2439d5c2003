"""Search spaces as data: a base experiment, a distribution per searched setting, fixed values.

A space is a TOML or JSON document (a named one lives in search_spaces/)::

    base = "optimal_small"                       # the experiment every trial starts from
    learning_rate = { loguniform = [1e-5, 3e-3] }
    n_layer = { choice = [2, 4, 6, 8] }
    warmup_iters = { randint = [0, 200] }
    batch_size = 16                              # a plain value fixes the setting

The distributions are Ray Tune's own, with Ray's bounds: `loguniform` and `uniform` [lo, hi),
`randint` [lo, hi) (the upper bound excluded, as tune.randint), `qrandint` [lo, hi, q] (both
bounds included, multiples of q, as tune.qrandint), `choice` [values...], `grid` [values...]
(every value, with --search-alg random).

Two keys are not settings. `head_size` may be searched (or fixed) instead of n_embd: then
n_embd = n_head * head_size, so every sampled point is a model whose width divides into its
heads. `flops_budget` ("base", or a number of training FLOPs) gives every trial the same
compute: its max_iters is derived from its own FLOPs per token, and its eval interval and
warmup keep the base's share of the run, so every trial reports at the same fractions of the
budget.

Every value a space can produce is checked against the config's own validation before anything
runs; a bad entry is one UserError line.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from slm_tune.config import FIELD_TYPES, ExperimentConfig, coerce
from slm_tune.model.counts import flops_per_token, tokens_per_iter, training_flops
from slm_tune.errors import UserError, closest
from slm_tune.metrics import SEARCH_METRICS, get_metric

KINDS = ("loguniform", "uniform", "randint", "qrandint", "choice", "grid")
RESERVED = ("base", "description", "flops_budget")
DERIVED = {"head_size": int}  # searchable keys that are not ExperimentConfig fields
NOT_SEARCHABLE = ("name", "description")
# Settings PBT may change in the middle of a run: they shape the optimisation, not the model or
# its data, so a trial can continue from another trial's weights with new values of them.
MUTABLE = ("learning_rate", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "dropout")


@dataclass(frozen=True)
class Dist:
    """One searched setting's distribution, as written in a space: `kind` and its arguments."""

    key: str
    kind: str
    args: tuple

    def domain(self):
        """The Ray Tune domain (tune.loguniform, ...)."""
        from ray import tune

        a = self.args
        if self.kind == "loguniform":
            return tune.loguniform(a[0], a[1])
        if self.kind == "uniform":
            return tune.uniform(a[0], a[1])
        if self.kind == "randint":
            return tune.randint(a[0], a[1])
        if self.kind == "qrandint":
            return tune.qrandint(a[0], a[1], a[2])
        if self.kind == "choice":
            return tune.choice(list(a))
        return tune.grid_search(list(a))

    def optuna(self):
        """The Optuna distribution of the same values (for importance over any search's trials)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        a = self.args
        if self.kind in ("loguniform", "uniform"):
            return FloatDistribution(a[0], a[1], log=self.kind == "loguniform")
        if self.kind == "randint":
            return IntDistribution(a[0], a[1] - 1)
        if self.kind == "qrandint":
            return IntDistribution(a[0], a[1], step=a[2])
        return CategoricalDistribution(list(dict.fromkeys(a)))

    @property
    def log_scale(self) -> bool:
        return self.kind == "loguniform"

    @property
    def categorical(self) -> bool:
        return self.kind in ("choice", "grid")

    def candidates(self) -> list | None:
        """Every value it can produce, when that is a finite list; None for continuous ones."""
        a = self.args
        if self.kind == "randint":
            return list(range(a[0], a[1]))
        if self.kind == "qrandint":
            return list(range(a[0], a[1] + 1, a[2]))
        if self.categorical:
            return list(a)
        return None

    def probes(self) -> list:
        """The values to check against the config's rules: every value, or the bounds."""
        values = self.candidates()
        if values is None:
            return list(self.args[:2])
        return values if len(values) <= 64 else [values[0], values[-1]]

    def spec(self) -> dict[str, list]:
        return {self.kind: list(self.args)}

    def describe(self) -> str:
        """As written in a TOML space: `{ loguniform = [1e-05, 0.003] }`."""
        return "{ %s = [%s] }" % (self.kind, ", ".join(json.dumps(v) for v in self.args))

    def mutation(self):
        """What PBT perturbs it with: a list of values to step between, or Ray's domain."""
        return list(self.args) if self.categorical else self.domain()

    def clip(self, value: Any) -> Any:
        """A value PBT perturbed (x0.8, x1.2) brought back within the space's bounds."""
        if self.categorical:
            return value
        lo, hi = self.args[0], self.args[1]
        if self.kind == "randint":
            hi = hi - 1
        return min(max(value, lo), hi)


def _kind_of(key: str) -> type:
    return DERIVED.get(key) or FIELD_TYPES[key]


def parse_dist(key: str, entry: Mapping[str, Any], where: str) -> Dist:
    """`{loguniform = [1e-5, 3e-3]}` for setting `key` -> Dist, or a one-line UserError."""
    if len(entry) != 1:
        raise UserError(f"{where}: {key} = {dict(entry)!r} must have exactly one distribution "
                        f"({', '.join(KINDS)}), e.g. {key} = {{ choice = [1, 2] }}")
    (kind, args), = entry.items()
    if kind not in KINDS:
        raise UserError(f"{where}: {key}: unknown distribution {kind!r}{closest(kind, KINDS)}; "
                        f"use one of {', '.join(KINDS)}")
    if not isinstance(args, (list, tuple)):
        raise UserError(f"{where}: {key}: {kind} takes a list, e.g. {key} = {{ {kind} = [...] }}")
    ftype = _kind_of(key)
    if kind in ("choice", "grid"):
        if not args:
            raise UserError(f"{where}: {key}: {kind} has no values; give one or more")
        return Dist(key, kind, tuple(_coerce(key, v, where) for v in args))
    if ftype in (bool, str):
        raise UserError(f"{where}: {key} is a {ftype.__name__} setting; search it with choice or grid")
    numbers = []
    for v in args:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{where}: {key}: {kind} bounds must be finite numbers, got {v!r}")
        numbers.append(v)
    if kind in ("loguniform", "uniform"):
        if ftype is int:
            raise UserError(f"{where}: {key} is a whole number; search it with randint, qrandint or choice, "
                            f"not {kind}")
        _arity(key, kind, numbers, 2, "[low, high]", where)
        lo, hi = float(numbers[0]), float(numbers[1])
        if not lo < hi:
            raise UserError(f"{where}: {key}: {kind} [{lo:g}, {hi:g}] is an empty or inverted range; "
                            "give [low, high] with low < high")
        if kind == "loguniform" and lo <= 0:
            raise UserError(f"{where}: {key}: loguniform needs a positive low bound, got {lo:g}")
        return Dist(key, kind, (lo, hi))
    if any(float(v) != int(v) for v in numbers):
        raise UserError(f"{where}: {key}: {kind} bounds must be whole numbers, got {numbers}")
    numbers = [int(v) for v in numbers]
    if kind == "randint":
        _arity(key, kind, numbers, 2, "[low, high) (high excluded, as tune.randint)", where)
        lo, hi = numbers
        if not lo < hi:
            raise UserError(f"{where}: {key}: randint [{lo}, {hi}) is an empty or inverted range "
                            "(the upper bound is excluded, as in tune.randint); give low < high")
        return Dist(key, kind, (lo, hi))
    _arity(key, kind, numbers, 3, "[low, high, q] (both included, as tune.qrandint)", where)
    lo, hi, q = numbers
    if q < 1:
        raise UserError(f"{where}: {key}: qrandint step q={q} must be 1 or more")
    if not lo < hi:
        raise UserError(f"{where}: {key}: qrandint [{lo}, {hi}] is an empty or inverted range; give low < high")
    if lo % q or hi % q:
        raise UserError(f"{where}: {key}: qrandint bounds {lo} and {hi} must be multiples of q={q} "
                        "(Ray rounds samples to multiples of q)")
    return Dist(key, kind, (lo, hi, q))


def _arity(key: str, kind: str, args: list, n: int, form: str, where: str) -> None:
    if len(args) != n:
        raise UserError(f"{where}: {key}: {kind} takes {n} numbers {form}, got {len(args)}")


def _coerce(key: str, value: Any, where: str) -> Any:
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}: {key}: {value!r} is not a single value")
    try:
        return coerce(key, value) if key in FIELD_TYPES else int(coerce("n_embd", value))
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


@dataclass(frozen=True)
class SearchSpace:
    """A named search: what every trial starts from, what it samples, what it fixes."""

    name: str
    base: ExperimentConfig
    dists: dict[str, Dist]
    fixed: dict[str, Any] = field(default_factory=dict)
    flops_budget: float | None = None  # training FLOPs every trial spends, when set
    description: str = ""
    pinned: tuple[str, ...] = ()  # settings the space searches that the command line fixed

    @property
    def searched(self) -> list[str]:
        return list(self.dists)

    @property
    def mutable(self) -> list[str]:
        """The searched settings PBT may perturb mid-run."""
        return [k for k in self.dists if k in MUTABLE]

    @property
    def has_grid(self) -> bool:
        return any(d.kind == "grid" for d in self.dists.values())

    def param_space(self) -> dict[str, Any]:
        return {k: d.domain() for k, d in self.dists.items()}

    def pbt_mutations(self) -> dict[str, Any]:
        return {k: self.dists[k].mutation() for k in self.mutable}

    def largest(self, key: str) -> Any:
        """The largest value of a setting over the space (ASHA's horizon when max_iters varies)."""
        if key in self.dists:
            return max(self.dists[key].probes())
        return getattr(self.config_for({}), key)

    def config_for(self, point: Mapping[str, Any], name: str | None = None) -> ExperimentConfig:
        """The experiment a sampled point stands for (values from the point win over fixed ones)."""
        values = {**self.fixed, **{k: point[k] for k in self.dists if k in point}}
        head_size = values.pop("head_size", None)
        c = self.base.replace(name=name or self.name, description=self._describe(values, head_size), **values)
        if head_size is not None:
            c = c.replace(n_embd=c.n_head * int(head_size))
        if self.flops_budget:
            c = self.fit_budget(c)
        return c

    def _describe(self, values: Mapping[str, Any], head_size: Any) -> str:
        shown = {k: v for k, v in values.items() if k in self.dists}
        if head_size is not None and "head_size" in self.dists:
            shown["head_size"] = head_size
        text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        return f"search {self.name} from {self.base.name}: {text}" if text else f"search {self.name}"

    def fit_budget(self, c: ExperimentConfig) -> ExperimentConfig:
        """`c` trained for the iterations that spend the budget, with the base's eval cadence
        (the same number of reports) and warmup share."""
        per_iter = flops_per_token(c) * tokens_per_iter(c)
        iters = max(1, round(self.flops_budget / per_iter))
        reports = max(1, round(self.base.max_iters / self.base.eval_interval))
        warmup_share = self.base.warmup_iters / self.base.max_iters
        return c.replace(max_iters=iters, eval_interval=max(1, round(iters / reports)),
                         warmup_iters=round(iters * warmup_share))

    # ---------------------------------------------------------------- storage (study.json)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base.to_dict(), "fixed": dict(self.fixed),
                "space": {k: d.spec() for k, d in self.dists.items()},
                "flops_budget": self.flops_budget, "description": self.description, "pinned": list(self.pinned)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "SearchSpace":
        dists = {k: Dist(k, kind, tuple(args)) for k, spec in doc["space"].items() for kind, args in spec.items()}
        return cls(name=doc["name"], base=ExperimentConfig(**doc["base"]), dists=dists,
                   fixed=dict(doc.get("fixed", {})), flops_budget=doc.get("flops_budget"),
                   description=doc.get("description", ""), pinned=tuple(doc.get("pinned", ())))


def parse_space(
    doc: Mapping[str, Any],
    name: str,
    registry: Mapping[str, ExperimentConfig],
    overrides: Mapping[str, Any] | None = None,
    where: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """A space document -> a checked SearchSpace.

    `overrides` (what the user set: --set, --max-iters, --dataset) apply to the base; one that
    names a searched setting fixes it instead of searching it (`pinned`). `defaults` (what the
    command line derives, such as a shorter warmup for --max-iters) apply to the base too, but
    never stop a setting from being searched.
    """
    where = where or f"search {name!r}"
    if not isinstance(doc, Mapping):
        raise UserError(f"{where}: a search space is a table of settings, got {type(doc).__name__}")
    doc = dict(doc)
    base_name = doc.pop("base", "baseline")
    description = str(doc.pop("description", ""))
    budget = doc.pop("flops_budget", None)
    if not isinstance(base_name, str) or base_name not in registry:
        raise UserError(f"{where}: base {base_name!r} is not an experiment{closest(str(base_name), registry)}; "
                        "`python studies.py list` shows them (or add yours with --experiments-file)")
    overrides = dict(overrides or {})
    pinned = tuple(k for k, v in doc.items() if k in overrides and isinstance(v, Mapping))
    dists: dict[str, Dist] = {}
    fixed: dict[str, Any] = {}
    for key, entry in doc.items():
        if key in NOT_SEARCHABLE:
            raise UserError(f"{where}: {key!r} is set per trial and cannot be searched; remove it")
        if key not in FIELD_TYPES and key not in DERIVED:
            raise UserError(f"{where}: unknown setting {key!r}{closest(key, [*FIELD_TYPES, *DERIVED])}; "
                            "`python studies.py details baseline` lists every setting")
        if key in overrides:
            continue  # fixed by the command line
        if isinstance(entry, Mapping):
            dists[key] = parse_dist(key, entry, where)
        else:
            fixed[key] = _coerce(key, entry, where)
    if "head_size" in dists and "n_embd" in dists:
        raise UserError(f"{where}: search head_size or n_embd, not both (n_embd = n_head * head_size)")
    if not dists:
        raise UserError(f"{where}: nothing is searched; give at least one setting a distribution, "
                        "e.g. learning_rate = { loguniform = [1e-5, 3e-3] }")
    soft = {k: v for k, v in (defaults or {}).items() if k not in dists and k not in DERIVED}
    try:
        base = registry[base_name].replace(**soft, **{k: v for k, v in overrides.items() if k not in DERIVED})
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    if "head_size" in overrides:
        fixed["head_size"] = int(overrides["head_size"])
    space = SearchSpace(name=name, base=base, dists=dists, fixed=fixed, description=description,
                        flops_budget=_budget(budget, base, where), pinned=pinned)
    _check(space, where)
    return space


def _budget(value: Any, base: ExperimentConfig, where: str) -> float | None:
    if value is None:
        return None
    if value == "base":
        return float(training_flops(base))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{where}: flops_budget = {value!r} must be \"base\" (the base experiment's training "
                        "FLOPs) or a positive number of FLOPs, e.g. 2e15")
    return float(value)


def _check(space: SearchSpace, where: str) -> None:
    """Every value the space can produce makes a valid config (or a one-line error now)."""
    def build(point: dict[str, Any]) -> ExperimentConfig:
        return space.config_for(point, name=space.name)

    try:
        build({})
    except UserError as e:
        raise UserError(f"{where}: the fixed settings are invalid: {e}") from None
    _check_heads_divide(space, where)
    for key, d in space.dists.items():
        for value in d.probes():
            point = {key: value, **_neutral_heads(key, value, space)}
            try:
                build(point)
            except UserError as e:
                raise UserError(f"{where}: {key} = {d.describe()} can give {key}={value!r}, which is invalid: "
                                f"{str(e).split('is invalid: ', 1)[-1]}") from None


def _check_heads_divide(space: SearchSpace, where: str) -> None:
    """Every width the space gives divides into every head count it gives (unless the width is
    derived from the heads, through head_size), named by the rule itself."""
    if "head_size" in space.dists or "head_size" in space.fixed:
        return
    if "n_embd" not in space.dists and "n_head" not in space.dists:
        return
    for e, h in itertools.product(_values(space, "n_embd"), _values(space, "n_head")):
        if h > 0 and e % h:
            searched = [k for k in ("n_embd", "n_head") if k in space.dists]
            shown = "; ".join(f"{k} = {space.dists[k].describe()}" for k in searched)
            raise UserError(f"{where}: {shown} can give n_embd={e} with n_head={h}, but n_embd must be divisible "
                            "by n_head; search head_size instead of n_embd (n_embd = n_head * head_size) or "
                            "choose values that divide")


def _neutral_heads(key: str, value: Any, space: SearchSpace) -> dict[str, Any]:
    """Companion values that keep one probed setting clear of the width/heads rule (checked
    over every combination afterwards), so a probe fails only for the setting's own rules."""
    if key == "n_embd" and "n_head" in space.dists:
        return {"n_head": 1}
    if key == "n_head":
        if "head_size" in space.dists:
            return {"head_size": space.dists["head_size"].probes()[0]}
        if "n_embd" in space.dists:
            return {"n_embd": int(value) * space.base.head_size}
    return {}


def _values(space: SearchSpace, key: str) -> list[int]:
    if key in space.dists:
        return [int(v) for v in space.dists[key].candidates() or []]
    return [int(getattr(space.config_for({}), key))]


def load_space_file(
    path: str | Path,
    registry: Mapping[str, ExperimentConfig],
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """A user's space from a .toml or .json file; the search is named after the file (mine.toml -> mine)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"search space file {str(path)!r} does not exist; give the path of a .toml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in path.stem) or "search"
    return parse_space(doc, name, registry, overrides, where=str(path), defaults=defaults)


def check_metric(metric: str, space: SearchSpace) -> str:
    """The searcher's metric; per-token losses compare trials only when they share a vocabulary."""
    if get_metric(metric, SEARCH_METRICS).per_token and "vocab_size" in space.dists:
        raise UserError(f"--metric {metric} compares trials by loss per token, which differs between vocabulary "
                        f"sizes and this space searches vocab_size; use --metric best_val_bpb (bits per byte)")
    return metric


def clip_to_space(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """PBT's custom_explore_fn: its perturbations (x0.8, x1.2) may leave the space; bring them back.
    A module-level function (bound with functools.partial) so that Tune can pickle the scheduler."""
    out = dict(config)
    for key in space.mutable:
        if key in out:
            out[key] = space.dists[key].clip(out[key])
    return out
