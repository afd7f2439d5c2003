"""Stored studies to DataFrames, files and plots; importable from a notebook:

    from analysis import load_run, find_runs, load_runs, compare
    trials, history = load_runs(find_runs("."))
"""

from analysis.export import compare, export_runs, export_study, summarize
from analysis.load import find_runs, load_run, load_runs

__all__ = ["compare", "export_runs", "export_study", "find_runs", "load_run", "load_runs", "summarize"]
