"""The Ray a local study starts (no --address): this machine's CPUs, reachable from this machine only.

A local Ray (2.60) listens on the node's IP, which for a cluster is the machine's network address:
its GCS, raylets, object manager and every worker's gRPC port were open to the network, with token
authentication the only lock. Ray puts a node on the loopback interface when its cluster mode is
off, as it does on Windows and macOS; its processes read that switch from the environment
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and the driver read it when it imported ray, so both are
set while the local Ray starts, and the driver's is put back afterwards. Token authentication
(RAY_AUTH_MODE=token, Ray's default for a new local Ray; its token is ~/.ray/auth_token) stays
on unless the user's environment turns it off, and the dashboard is not started.

Its workers keep Ray's priority, 15 nicer than the driver (RAY_worker_niceness, at most 19), which
lets the driver, GCS and raylet take the CPU ahead of busy trials. Workers at the driver's
priority were tried and not kept: the suite's time did not tell either way (docs/performance.md).
The price of Ray's default, beside another CPU-bound job at normal priority, is starved trials; a
user's own RAY_worker_niceness wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Iterator

import ray

from slm_tune.errors import UserError
from slm_tune.tune.worker_env import scoped_environ, trial_env

CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
STARTUP_TIMEOUT = "timed out during startup"  # Ray's message when its node does not come up


def local_ray_env() -> dict[str, str]:
    """The environment a local Ray starts in: the trial workers' (workers.py), loopback only, Ray's
    repeated log lines folded; a user's own setting of any wins. Token authentication is Ray's
    default for a new local Ray, which sets RAY_AUTH_MODE=token itself (setting it here first
    would skip Ray's own set-up of the driver's auth config)."""
    env = {**trial_env(), CLUSTER_SWITCH: "0", "RAY_DEDUP_LOGS": "1"}
    return {k: v for k, v in env.items() if k not in os.environ}


@contextlib.contextmanager
def _driver_cluster_mode(enabled: bool) -> Iterator[None]:
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if saved is None:  # another Ray version: its processes still read the environment
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def start_local_ray(cpus: int, verbose: bool = False) -> None:
    """A Ray of this machine's `cpus` on loopback, its workers started in the trial environment."""
    env = local_ray_env()
    loopback = env.get(CLUSTER_SWITCH, os.environ.get(CLUSTER_SWITCH, "")).lower() not in ("1", "true")  # as Ray reads it
    with scoped_environ(env), _driver_cluster_mode(not loopback):
        try:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=verbose,
                     logging_level=logging.INFO if verbose else logging.WARNING)
        except Exception as e:  # Ray 2.60 raises a bare Exception when its node misses a fixed 30 s
            if STARTUP_TIMEOUT not in str(e):
                raise
            raise UserError("the local Ray did not start within Ray's fixed 30 seconds (its node had not "
                            "registered): the machine is most likely too busy (every core taken, or this process "
                            "at a low priority); run it again when it is quieter (no trial had started)") from None


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A one-line error when nothing listens at a cluster's --address. Ray's own connection retries
    for minutes inside ray.init, deaf to Ctrl-C and SIGTERM (ray-tune-notes); a plain TCP connect
    first answers in seconds. "auto" (the address file of a local `ray start`) is left to Ray."""
    if address.strip().lower() == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or ray://head:10001) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UserError(f"nothing answers at the Ray cluster address {address!r} ({why}); start the cluster "
                        "(`ray start --head` on its head node), check --address, or leave it out to run locally") from None
