import sys

import pytest
import ray

import os

from slm_tune.tune.local_ray import start_local_ray
from slm_tune.tune.worker_env import MALLOC_TUNABLES, scoped_environ, trial_env


def test_trial_env_leaves_a_users_setting_alone():
    assert trial_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {}
    expected = {"GLIBC_TUNABLES": MALLOC_TUNABLES} if sys.platform.startswith("linux") else {}
    assert trial_env({}) == expected


def _faults_task():
    def faults_of_reused_blocks() -> int:
        """Minor page faults while a 150 MB block is allocated, touched and freed 20 times."""
        import ctypes
        import resource

        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):  # glibc's malloc itself, as torch uses it
            block = libc.malloc(150_000_000)
            ctypes.memset(block, 1, 150_000_000)
            libc.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    return ray.remote(num_cpus=1)(faults_of_reused_blocks)  # defined here: pickled by value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_ray_workers_start_with_the_allocator_setting(monkeypatch):
    """glibc reads its tunables once, at exec, so the proof is behaviour: in a trial worker a
    freed big block is reused, not faulted in again page by page (36,600 faults per block)."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    pages = 150_000_000 // 4096
    ray.shutdown()  # another test's local Ray: this one starts its own
    start_local_ray(1)
    try:
        tuned = ray.get(_faults_task().remote())
    finally:
        ray.shutdown()
    assert tuned < 3 * pages, tuned
    ray.init(num_cpus=1, include_dashboard=False)  # without it: the faults this setting saves
    try:
        plain = ray.get(_faults_task().remote())
    finally:
        ray.shutdown()
    assert plain > 15 * pages, plain


def test_scoped_environ_restores_the_environment(monkeypatch):
    monkeypatch.setenv("SLM_TUNE_A", "kept")
    monkeypatch.delenv("SLM_TUNE_B", raising=False)
    with scoped_environ({"SLM_TUNE_A": "changed", "SLM_TUNE_B": "new"}):
        assert (os.environ["SLM_TUNE_A"], os.environ["SLM_TUNE_B"]) == ("changed", "new")
    assert os.environ["SLM_TUNE_A"] == "kept" and "SLM_TUNE_B" not in os.environ
