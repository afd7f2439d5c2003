"""Workflows over the studies: `build` (from a compute budget to the best model it buys). Each
decides what to run from what is stored and runs its stages through a runner the command line
gives it; the package sits between the command line and analysis (studies -> workflows ->
analysis -> search_spaces -> slm_tune)."""
