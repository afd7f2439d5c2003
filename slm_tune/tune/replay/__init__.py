"""Replaying searches against a table of recorded learning curves (bench/tabular.py).

A table holds configurations trained once each with their whole learning curves (the `tabular`
study). A searcher replayed against it proposes a point of the search space and gets the curve of
the nearest trained configuration, eval by eval, as if it were training: `table` reads the table
and finds the nearest point; `trainable` is a Tune trainable that reports a curve (the live code
path: `studies.py search ... --replay TABLE`); `simulation` runs the same Optuna samplers and the
same Ray scheduler objects by ask-and-tell on a simulated clock, fast enough for many seeds.
Nothing here trains or imports torch.
"""
