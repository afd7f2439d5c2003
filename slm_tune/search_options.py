"""A search's samplers and schedulers by name, with what each is (the CLI's choices; no Ray here).
slm_tune.tune.schedulers builds them; bench/tabular.py measures them (docs/search.md, "Which searcher")."""

from __future__ import annotations

SEARCH_ALGS = {
    "random": "random search (the default; Ray's, or Optuna's RandomSampler where constraints redraw points)",
    "optuna": "Optuna's TPE, multivariate, constant liar",
    "tpe-independent": "Optuna's TPE, one setting at a time",
    "gp": "Optuna's GPSampler (Gaussian-process Bayesian optimisation; about a second per trial to suggest)",
    "qmc": "Optuna's QMCSampler (a scrambled Sobol sequence: space-filling, not adaptive)",
    "nsga2": "Optuna's NSGA-II (evolutionary; meant for several objectives)",
    "cmaes": "Optuna's CmaEsSampler (CMA-ES over the numeric settings, the categorical ones at random; one objective)",
}
SCHEDULERS = {
    "fifo": "every trial runs to its end",
    "asha": "ASHA: stops a trial at a rung where it is in the worse half (Ray's ASHAScheduler)",
    "hyperband": "asynchronous HyperBand: ASHA in 3 brackets of different grace periods",
    "median": "median stopping: stops a trial whose best is worse than the median of the others' running means",
    "pbt": "population-based training: copies good trials' weights and perturbs their optimisation settings",
}
