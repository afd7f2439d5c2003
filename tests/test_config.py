import json

import pytest

from slm_tune.config import (EXPERIMENT_CONFIGS, ExperimentConfig, load_experiments_file,
                             parse_overrides)
from slm_tune.errors import UserError

SEED = {  # the seed's EXPERIMENT_README: what each experiment changes from baseline
    "vocab_small": {"vocab_size": 10_000}, "vocab_medium": {"vocab_size": 25_000},
    "embd_small": {"n_embd": 128}, "embd_large": {"n_embd": 512}, "embd_xlarge": {"n_embd": 768},
    "arch_deep": {"n_layer": 8}, "arch_wide": {"n_head": 8},
    "data_small": {"data_fraction": 0.1}, "data_medium": {"data_fraction": 0.5},
    "lr_high": {"learning_rate": 5e-4}, "lr_low": {"learning_rate": 5e-5},
}


def test_fourteen_named_experiments_match_the_seed():
    seeds = [n for n in EXPERIMENT_CONFIGS if not n.startswith("arch_") or n in SEED]
    assert len(seeds) == 14 and len(EXPERIMENT_CONFIGS) == 18  # and the four block designs
    assert set(SEED) | {"baseline", "optimal_small", "optimal_fast"} == set(seeds)
    base = EXPERIMENT_CONFIGS["baseline"]
    assert (base.vocab_size, base.n_embd, base.n_layer, base.n_head, base.block_size,
            base.batch_size, base.learning_rate) == (50_257, 256, 4, 4, 128, 32, 1e-4)
    ignore = {"name", "description"}
    for name, changes in SEED.items():
        c = EXPERIMENT_CONFIGS[name].to_dict()
        diff = {k: v for k, v in c.items() if k not in ignore and base.to_dict()[k] != v}
        assert diff == changes, name


def test_optimal_experiments_say_why():
    for name in ("optimal_small", "optimal_fast"):
        assert len(EXPERIMENT_CONFIGS[name].description) > 40


def test_from_name_applies_and_validates_overrides():
    c = ExperimentConfig.from_name("baseline", n_layer=6, learning_rate="3e-4")
    assert c.n_layer == 6 and c.learning_rate == 3e-4 and c.name == "baseline"
    with pytest.raises(UserError, match="n_embd=256 is invalid: must be divisible by n_head=3"):
        ExperimentConfig.from_name("baseline", n_head=3)


def test_unknown_experiment_suggests_closest():
    with pytest.raises(UserError, match=r"unknown experiment 'vocab_smal' \(did you mean: vocab_small"):
        ExperimentConfig.from_name("vocab_smal")


@pytest.mark.parametrize("field,value,rule", [
    ("vocab_size", 100, "the GPT-2 tokenizer gives 257 to 50,257 tokens"),
    ("vocab_size", 60_000, "the GPT-2 tokenizer gives"),
    ("n_layer", 0, "must be a positive whole number"),
    ("data_fraction", 0.0, "must be in (0, 1]"),
    ("data_fraction", 1.5, "must be in (0, 1]"),
    ("dropout", 1.0, "must be in [0, 1)"),
    ("learning_rate", -1.0, "must be positive"),
    ("precision", "fp8", "must be one of auto, float32, bfloat16"),
    ("batch_size", 2.5, "must be of type int"),
])
def test_invalid_values_name_field_value_and_rule(field, value, rule):
    with pytest.raises(UserError) as e:
        ExperimentConfig(**{field: value})
    msg = str(e.value)
    assert field in msg and repr(value) in msg and rule in msg and "\n" not in msg


def test_parse_overrides_types_and_errors():
    assert parse_overrides(["n_layer=6", "learning_rate=3e-4", "compile=true", "dataset=x.txt"]) == {
        "n_layer": 6, "learning_rate": 3e-4, "compile": "true", "dataset": "x.txt"}
    with pytest.raises(UserError, match="not key=value"):
        parse_overrides(["n_layer"])
    with pytest.raises(UserError, match=r"'n_layers' is not a setting \(did you mean: n_layer"):
        parse_overrides(["n_layers=3"])
    with pytest.raises(UserError, match="n_layer='six' is not a valid int"):
        parse_overrides(["n_layer=six"])


def test_experiments_file_toml_and_json(tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text('[wide_lr]\nbase = "arch_wide"\nlearning_rate = 3e-4\n\n[tiny]\nn_embd = 64\nn_head = 2\n')
    reg = load_experiments_file(toml)
    assert reg["wide_lr"].n_head == 8 and reg["wide_lr"].learning_rate == 3e-4
    assert reg["tiny"].n_embd == 64 and reg["tiny"].vocab_size == 50_257
    assert "baseline" in reg and len(reg) == len(EXPERIMENT_CONFIGS) + 2
    js = tmp_path / "mine.json"
    js.write_text(json.dumps({"j": {"n_layer": 2}}))
    assert load_experiments_file(js)["j"].n_layer == 2
    copied = tmp_path / "copied.json"  # a results file's config, its name inside
    copied.write_text(json.dumps({"j": {**EXPERIMENT_CONFIGS["arch_deep"].__dict__, "name": "j"}}))
    assert load_experiments_file(copied)["j"].n_layer == EXPERIMENT_CONFIGS["arch_deep"].n_layer
    copied.write_text(json.dumps({"j": {"name": "k", "n_layer": 2}}))
    with pytest.raises(UserError, match=r"\[j\] sets name = 'k'.*rename the table to \[k\]"):
        load_experiments_file(copied)


def test_experiments_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[a]\nn_layer = 2\nn_embd = = 3\n')
    with pytest.raises(UserError, match=r"bad.toml: invalid TOML: .*line 3"):
        load_experiments_file(bad)
    badjson = tmp_path / "bad.json"
    badjson.write_text('{"a": {"n_layer": 2,}\n}')
    with pytest.raises(UserError, match=r"bad.json: line 1: invalid JSON"):
        load_experiments_file(badjson)
    invalid = tmp_path / "invalid.toml"
    invalid.write_text('[a]\nn_head = 3\n')
    with pytest.raises(UserError, match=r"\[a\].*must be divisible by n_head=3"):
        load_experiments_file(invalid)
