"""The token data a study needs, tokenized once by the driver before any trial starts."""

from __future__ import annotations

import itertools
from typing import Any

from slm_tune.config import ExperimentConfig
from slm_tune.data.cache import check_data, prepare_tokens
from slm_tune.tune.study_run import StudyRun

DATA_KEYS = ("dataset", "vocab_size", "data_fraction")


def data_configs(run: StudyRun) -> dict[str, ExperimentConfig]:
    """The configs whose token data the study needs: each experiment's; for a search, one per
    combination of the corpora, vocabularies and fractions it can sample (a continuous one is
    tokenized by the trials that sample it, under the cache's lock)."""
    if run.search is None:
        return dict(run.configs)
    space = run.search
    options = []
    for key in DATA_KEYS:
        values = space.dists[key].candidates() if key in space.dists else None
        options.append([(key, v) for v in values] if values else [])
    out = {}
    for combo in itertools.product(*[o or [None] for o in options]):
        point = dict(kv for kv in combo if kv is not None)
        # the probe with the largest shape checks the corpus is big enough for every trial
        for k in ("block_size", "batch_size"):
            if k in space.dists:
                point[k] = space.largest(k)
        c = space.config_for(point)
        out[f"{c.dataset}|{c.vocab_size}|{c.data_fraction}"] = c
    return out


def prepare_data(run: StudyRun) -> dict[str, dict[str, Any]]:
    """Tokenize what the grid needs, once, before any trial starts; check it fits the configs."""
    info = {}
    for name, c in data_configs(run).items():
        data = prepare_tokens(c.dataset, c.vocab_size, c.data_fraction, cache_dir=run.cache_dir, log=run.log)
        check_data(c, data)
        info[name] = {"tokenizer": data.meta["tokenizer"], "entropy_bpb": data.entropy_bpb,
                      "train_tokens": data.meta["splits"]["train"]["tokens"],
                      **{k: getattr(c, k) for k in DATA_KEYS}}
    return info
