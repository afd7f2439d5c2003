"""The driver side: Ray Tune only, never torch (tests/test_boundaries.py holds it).

run.py runs a study (StudyRun -> resolve, restore or new, prepare data, fit, finish); trainable.py
is the one adapter to the trial side, importing it only where a trial runs; resources.py, worker_env.py, local_ray.py the CPUs, environment and local Ray a
study runs on; study_file.py the one reader and writer of study.json; callbacks/ what watches a
running study (progress lines, MLflow, Ray's loggers, the live export of finished trials).
"""
