"""The driver side: Ray Tune only, never torch (tests/test_house.py holds it).

run.py runs a study in named steps (announce, connect, size, find or make its run directory,
prepare data, fit, finish); study_run.py holds its settings; schedulers.py builds Ray's schedulers
and search algorithms; data_prep.py tokenizes what the trials need; study_record.py writes
study.json; resources.py, worker_env.py and local_ray.py are the CPUs, environment and local Ray a
study runs on; trainable.py is the one adapter to the trial side, which it imports only where a
trial runs; callbacks/ watch a running study (progress lines, MLflow, Ray's loggers, live export).
"""
