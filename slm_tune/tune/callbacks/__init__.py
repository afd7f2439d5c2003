"""Ray Tune callbacks of a running study: progress lines, MLflow, loggers, live export."""
