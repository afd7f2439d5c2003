"""What a killed driver leaves of Ray Tune's stored state, made resumable again.

Ray writes `experiment_state-<timestamp>.json` in the driver's staging directory (under the Ray
session's temporary directory) and then copies it into the run directory; neither write is atomic
(ray-tune-notes). A SIGKILL in the middle of the copy leaves an empty or cut-off file in the run
directory, from which `Tuner.restore` starts a study of no trials. A study's results are all still
there (result.json, checkpoints): the state is taken back from the staging copy when one is whole,
and otherwise resuming is refused with what to do instead. The same copy cuts a trial's result.json
and progress.csv short, even a finished trial's: those come back from this run's staging copy that
continues them (`staged_results`, `repair_results`), so its figures stay what the run reported.

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
    return sorted(_staging(run_dir, state_name, roots), key=lambda p: p.stat().st_mtime, reverse=True)


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


RESULT_FILES = ("result.json", "progress.csv")
FINAL_STATUSES = ("finished", "diverged")  # a trial's last report, as the trainable writes it (train/reports.py)
HEX_BLOB = r"(?:[0-9a-f]{2}){64,}"  # a pickle Ray writes into its record as hex


def staged_results(trial_dir: Path, trial_id: str | None, roots: list[Path] | None = None) -> tuple[Path, str] | None:
    """The staging copy of this trial's result.json that the trial's last driver left, and its text,
    when it continues the stored file. Only the newest staging directory of this very run folder
    that holds the trial counts (its driver's record names the folder's storage path: a copy of the study elsewhere,
    whose trials keep their ids, never counts; an older driver's copy is superseded), and only if
    it starts with the stored bytes, is longer, and every line of it is a whole report of the same
    trial (TRIAL_ID: Ray's record's, else the stored file's first line's; with neither, none
    counts). None when the stored file is the newest, or no such copy is left (another machine, a
    cleared temporary directory, a study moved since)."""
    stored = _read_bytes(trial_dir / "result.json")
    trial_id = trial_id or _first_trial_id(stored)
    if trial_id is None:
        return None
    ours = [d for d in _staging(trial_dir.parent, trial_dir.name, roots) if _stages_run(d.parent, trial_dir.parent)]
    if not ours:
        return None
    last = max(ours, key=lambda d: (_mtime(max(d.parent.glob(STATE_GLOB), default=d)), str(d)))
    staged = _read_bytes(last / "result.json")
    text = _reports_of(staged, trial_id) if _continues(stored, staged) else None
    return (last, text) if text else None


def repair_results(run_dir: Path, roots: list[Path] | None = None) -> list[str]:
    """Each trial's result files that its staging copy continues (staged_results: cut short by a
    kill, or behind the driver's when it stopped), taken back from that copy, or else its cut last
    line dropped (_drop_cut_line); the trials repaired."""
    state = newest_state(run_dir)
    ids = trial_ids(state.read_text(encoding="utf-8", errors="replace")) if state else {}
    repaired = []
    for trial_dir in sorted(p for p in Path(run_dir).iterdir() if p.is_dir()):
        staged = staged_results(trial_dir, ids.get(trial_dir.name), roots)
        if staged is None:
            dropped = [_drop_cut_line(trial_dir / name) for name in RESULT_FILES]  # each file, not the first only
            if any(dropped):
                repaired.append(trial_dir.name)
            continue
        for name in RESULT_FILES:
            if _continues(_read_bytes(trial_dir / name), copy := _read_bytes(staged[0] / name)):
                _write(trial_dir / name, copy)
        repaired.append(trial_dir.name)
    return repaired


def _drop_cut_line(path: Path) -> bool:
    """With no copy to take back, a last line a kill cut short is dropped (its report is lost
    either way), so that a resumed trial's first report (or CSV row), which Ray appends, is not
    glued to it."""
    data = _read_bytes(path)
    if not data or data.endswith(b"\n"):
        return False
    _write(path, data[: data.rfind(b"\n") + 1])
    return True


def _write(path: Path, data: bytes) -> None:
    """PATH's new content, whole or not at all (a kill during --resume's repair leaves the old)."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def complete_reports(text: str) -> bool:
    """A result.json's text whose every line is a whole report and whose last one is the trial's
    own last (FINAL_STATUSES): nothing of it can be missing."""
    reports = _whole_reports(text)
    return bool(reports) and reports[-1].get("status") in FINAL_STATUSES


def _whole_reports(text: str) -> list[dict] | None:
    """The reports of a result.json's text when every line is a whole JSON object (blank lines
    aside); None when one is not (a line cut short)."""
    try:
        reports = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        return None
    return reports if all(isinstance(r, dict) for r in reports) else None


def _staging(run_dir: Path, name: str, roots: list[Path] | None) -> list[Path]:
    """Ray's staging copies of NAME (a state file or a trial directory) of runs named as RUN_DIR,
    each once (Ray's session_latest link names the newest session again)."""
    found = {}
    for root in ray_temp_roots() if roots is None else roots:
        for p in root.glob(f"session_*/artifacts/*/{Path(run_dir).name}/driver_artifacts/{name}"):
            found.setdefault(p.resolve(), p)
    return list(found.values())


def _stages_run(driver_artifacts: Path, run_dir: Path) -> bool:
    """Whether the staging directory's driver ran RUN_DIR: its own record (the newest by name; the
    older ones a resumed driver downloaded from storage, naming wherever the study ran before, a
    copy's first folder among them) names RUN_DIR's storage path. Ray pickles its storage context
    as hex into each trial's entry, the path as posix; matched as a whole pickled string."""
    states = sorted(driver_artifacts.glob(STATE_GLOB))
    if not states:
        return False
    try:
        text = states[-1].read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    wanted = {_pickled(run_dir.parent.as_posix()), _pickled(run_dir.resolve().parent.as_posix())}
    return any(w in bytes.fromhex(blob) for blob in re.findall(HEX_BLOB, text) for w in wanted)


def _pickled(text: str) -> bytes:
    """TEXT as pickle writes a str (SHORT_BINUNICODE under 256 bytes, else BINUNICODE)."""
    data = text.encode("utf-8", "surrogatepass")
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else b"X" + len(data).to_bytes(4, "little") + data


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _continues(stored: bytes, staged: bytes) -> bool:
    return len(staged) > len(stored) and staged.startswith(stored)


def _reports_of(data: bytes, trial_id: str) -> str | None:
    """DATA's text when it is whole reports of TRIAL_ID only."""
    text = data.decode("utf-8", errors="replace")
    reports = _whole_reports(text)
    return text if reports and all(r.get("trial_id") == trial_id for r in reports) else None


def _first_trial_id(data: bytes) -> str | None:
    try:
        return json.loads(data.decode("utf-8", errors="replace").split("\n", 1)[0]).get("trial_id")
    except (ValueError, AttributeError):
        return None


def trial_ids(state_text: str) -> dict[str, str]:
    """Each trial directory's trial id in Ray's record (its `trial_data`)."""
    return {logdir: parsed["trial_id"] for logdir, parsed, _ in _trial_entries(state_text) if "trial_id" in parsed}


def _trial_entries(state_text: str):
    """(relative_logdir, the trial's JSON, the entry's parts) of each trial in Ray's record."""
    try:
        entries = json.loads(state_text).get("trial_data", [])
    except (ValueError, AttributeError):
        return
    for entry in entries:
        parts = entry if isinstance(entry, list) else [entry]
        try:
            parsed = json.loads(parts[0])
            logdir = parsed.get("relative_logdir")
        except (ValueError, TypeError, AttributeError):
            continue
        if logdir:
            yield logdir, parsed, parts


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
    for logdir, _, parts in _trial_entries(text):
        if (run_dir / logdir) in named:
            named[run_dir / logdir] |= _checkpoint_names(" ".join(str(part) for part in parts))
    return named


def _checkpoint_names(text: str) -> set[str]:
    """checkpoint_N names in a text and in the hex-written pickles inside it."""
    names = set(re.findall(r"checkpoint_\d+", text))
    for blob in re.findall(HEX_BLOB, text):
        names |= {m.decode() for m in re.findall(rb"checkpoint_\d+", bytes.fromhex(blob))}
    return names
