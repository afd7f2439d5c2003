"""Stored studies to DataFrames, files and plots; importable from a notebook:

    from analysis import load_run, find_runs, load_runs, compare
    trials, history = load_runs(find_runs("."))

    from analysis import importance, search_table, stored_run_search     # a search's own views
    space, meta = stored_run_search(find_runs(".", ["lr"])[-1])
    table = search_table(trials[trials["study"] == "lr"], space)     # best first
    importance(table, space)                                          # fANOVA + Spearman per setting
"""

from analysis.export import compare, export_runs, export_study, summarize
from analysis.load import find_runs, load_run, load_runs
from analysis.search_views import importance, search_table, stored_run_search

__all__ = ["compare", "export_runs", "export_study", "find_runs", "importance", "load_run", "load_runs",
           "search_table", "stored_run_search", "summarize"]
