"""A study stored by an earlier slm-tune (tests/fixtures/legacy_study, made by
tests/fixtures/make_legacy_study.py at commit c1ceb09 and SIGKILLed in its last trial) still
compares, samples, fits and resumes."""

import json
import shutil
from pathlib import Path

import pytest

import studies

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_study"


@pytest.fixture
def legacy(tmp_path) -> Path:
    out = tmp_path / "legacy"
    shutil.copytree(FIXTURE, out)
    return out


def _result_lines(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def test_legacy_study_compares_samples_and_fits(legacy, capsys):
    assert studies.main(["compare", "--output-dir", str(legacy)]) == 0
    table = (legacy / "experiments" / "experiment_comparison.csv").read_text().splitlines()
    assert len(table) == 7  # header + six trials
    statuses = json.loads((legacy / "experiments" / "batch_results.json").read_text())["trials"]
    assert sorted(t["status"] for t in statuses) == ["finished"] * 5 + ["interrupted"]
    assert studies.main(["sample", "legacy_0003", "--output-dir", str(legacy), "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.strip()
    # the fixture's six runs: the fit runs, with E at the corpus's entropy, and names the parameters
    # its model sizes (too close together) cannot determine
    assert studies.main(["fit", "--output-dir", str(legacy), "--bootstrap", "20"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" not in err
    fit = json.loads((legacy / "experiments" / "scaling_fit.json").read_text())
    assert len(fit["runs"]) == 6 and fit["E_fixed_to_entropy"] and fit["tokenizer"] == "gpt2-257"
    assert set(fit["undetermined"]) == {"A", "alpha"} and fit["bootstrap_fits"] >= 15
    assert 0 < fit["params"]["beta"] < 1 and (legacy / "experiments" / "scaling_fit.png").is_file()


def test_legacy_study_resumes(legacy, capsys, local_ray):
    run = legacy / "ray_results" / "legacy"
    before = {d.name: _result_lines(d) for d in run.glob("legacy_*")}
    code = studies.main(["search", "--space", str(legacy / "legacy.toml"), "--search-alg", "random",
                         "--num-samples", "1", "--max-concurrent", "1", "--output-dir", str(legacy), "--resume"])
    assert code == 0, capsys.readouterr().err[-3000:]
    after = {d.name: _result_lines(d) for d in run.glob("legacy_*")}
    assert set(after) == set(before)
    for name, lines in before.items():
        if lines[-1].get("status") == "finished":
            assert after[name] == lines  # not run again
    resumed = after["legacy_0006"]
    assert resumed[-1]["status"] == "finished" and resumed[-1]["iteration"] == 400
    assert (legacy / "best_model_legacy_0006.pt").is_file()
