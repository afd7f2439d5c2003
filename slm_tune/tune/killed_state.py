"""What a killed driver leaves of Ray Tune's stored state, made resumable again.

Ray writes `experiment_state-<timestamp>.json` in the driver's staging directory (under the Ray
session's temporary directory) and then copies it into the run directory; neither write is atomic
(ray-tune-notes). A SIGKILL in the middle of the copy leaves an empty or cut-off file in the run
directory, from which `Tuner.restore` starts a study of no trials. A study's results are all still
there (result.json, checkpoints): the state is taken back from the staging copy when one is whole,
and otherwise resuming is refused with what to do instead.

Ray also deletes checkpoints past num_to_keep as new ones arrive, so after a kill its record can
name one deleted since: `restore_missing_checkpoints` puts a copy of the newest in its place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from slm_tune.checkpoint_files import CHECKPOINT_FILE
from slm_tune.errors import UserError

STATE_GLOB = "experiment_state-*.json"


def newest_state(run_dir: Path) -> Path | None:
    """The state file Ray resumes from: the newest by name (its timestamp), as Ray picks it."""
    states = sorted(Path(run_dir).glob(STATE_GLOB))
    return states[-1] if states else None


def is_whole(path: Path | None) -> bool:
    """A state file that parses as JSON with the keys a restore reads (None: there is none)."""
    if path is None:
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"trial_data", "runner_data"} <= doc.keys()


def ray_temp_roots() -> list[Path]:
    """Where Ray keeps its sessions on this machine: RAY_TMPDIR or the system's temporary
    directory, as ray.init chooses it, and the running Ray's own when one is up."""
    roots = [Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"]
    try:
        import ray

        if ray.is_initialized():
            roots.insert(0, Path(ray._private.worker._global_node.get_session_dir_path()).parent)
    except (ImportError, AttributeError):
        pass
    return list(dict.fromkeys(roots))


def staged_copies(run_dir: Path, state_name: str, roots: list[Path]) -> list[Path]:
    """Ray's staging copies of one state file of this run (same experiment name), newest first."""
    found = [p for root in roots
             for p in root.glob(f"session_*/artifacts/*/{Path(run_dir).name}/driver_artifacts/{state_name}")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def repair_state(run_dir: Path, roots: list[Path] | None = None) -> str | None:
    """Make a killed run's newest state file whole again from Ray's staging copy; a note of what
    was done (None when it was whole). A UserError when no whole copy is left."""
    state = newest_state(run_dir)
    if state is None or is_whole(state):
        return None
    for copy in staged_copies(run_dir, state.name, ray_temp_roots() if roots is None else roots):
        if is_whole(copy):
            shutil.copyfile(copy, state)
            return (f"note: Ray's record {state.name} was cut off when the study was killed; "
                    f"it was taken back from Ray's own copy ({copy.parent})")
    raise UserError(
        f"--resume: Ray's record of this study ({state}) was cut off when the study was killed and no whole "
        "copy is left; its results are intact (`python studies.py compare` reads them): start the study "
        "again without --resume to run it afresh beside this one")


def restore_missing_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints that Ray's stored state names but that are gone, each replaced by a copy of its
    trial's newest complete one; what was replaced. Restoring from a deleted one fails the trial
    ("does not exist on storage anymore") on every retry. From the newest copy the trainable
    continues where the run really got to (it takes the newest checkpoint of the same run in any case)."""
    state = newest_state(run_dir)
    if state is None:
        return []
    replaced = []
    for trial_dir, named in _named_checkpoints(state, Path(run_dir)).items():
        present = sorted(d for d in trial_dir.glob("checkpoint_*") if (d / CHECKPOINT_FILE).is_file())
        for name in sorted(named):
            if present and not (trial_dir / name).exists():
                shutil.copytree(present[-1], trial_dir / name)
                replaced.append(f"{trial_dir.name}/{name}")
    return replaced


def _named_checkpoints(state: Path, run_dir: Path) -> dict[Path, set[str]]:
    """Each trial directory's checkpoint names in Ray's state file: in its trial entry (Ray's
    `trial_data`: the trial's JSON, with `relative_logdir`, whose checkpoint manager is a pickle
    written as hex), or written out as TRIAL/checkpoint_N anywhere in the file."""
    text = state.read_text(encoding="utf-8", errors="replace")
    named = {d: set(re.findall(rf"{re.escape(d.name)}/(checkpoint_\d+)", text))
             for d in sorted(p for p in run_dir.iterdir() if p.is_dir())}
    try:
        entries = json.loads(text).get("trial_data", [])
    except (ValueError, AttributeError):
        return named
    for entry in entries:
        parts = entry if isinstance(entry, list) else [entry]
        try:
            logdir = json.loads(parts[0]).get("relative_logdir")
        except (ValueError, TypeError, AttributeError):
            continue
        if logdir and (run_dir / logdir) in named:
            named[run_dir / logdir] |= _checkpoint_names(" ".join(str(part) for part in parts))
    return named


def _checkpoint_names(text: str) -> set[str]:
    """checkpoint_N names in a text and in the hex-written pickles inside it."""
    names = set(re.findall(r"checkpoint_\d+", text))
    for blob in re.findall(r"(?:[0-9a-f]{2}){64,}", text):
        names |= {m.decode() for m in re.findall(rb"checkpoint_\d+", bytes.fromhex(blob))}
    return names
