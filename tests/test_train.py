import math

import pytest

from slm_tune.data.cache import prepare_tokens
from slm_tune.train import lr_at, train
from conftest import tiny


def _data(c):
    return prepare_tokens(c.dataset, c.vocab_size, c.data_fraction)


def test_tiny_model_loss_falls():
    c = tiny(max_iters=60, eval_interval=20)
    every, saves = [], []
    result = train(c, _data(c), report=lambda m, save: (every.append(m), saves.append(save)))
    assert result.status == "finished"
    # an eval (with a checkpoint to save) every 20 iterations, a training-loss report (none) between
    assert [(r["iteration"], r["kind"], s is None) for r, s in zip(every, saves)] == [
        (10, "train", True), (20, "eval", False), (30, "train", True), (40, "eval", False), (50, "train", True),
        (60, "eval", False)]
    reports = [r for r in every if r["kind"] == "eval"]
    assert reports[-1]["val_loss"] < reports[0]["val_loss"] < math.log(c.vocab_size) + 0.5
    assert reports[-1]["status"] == "finished" and reports[0]["status"] == "running"
    for key in ("iteration", "train_loss", "val_loss", "best_val_loss", "val_bpb", "lr",
                "tokens_seen", "elapsed_s", "tokens_per_s"):
        assert key in reports[-1]
    assert reports[-1]["tokens_seen"] == 60 * c.batch_size * c.block_size


def test_val_bpb_is_loss_times_tokens_per_byte_over_ln2():
    c = tiny()
    data = _data(c)
    reports = []
    train(c, data, report=lambda m, save: reports.append(m))
    r = reports[-1]
    assert r["val_bpb"] == pytest.approx(r["val_loss"] * data.tokens_per_byte() / math.log(2))
    # the evaluation's standard error (tests/test_significance.py checks it), in both units and the history
    assert 0 < r["val_loss_se"] < r["val_loss"] / 10
    assert r["val_bpb_se"] == pytest.approx(r["val_loss_se"] * data.tokens_per_byte() / math.log(2))
    assert r["val_bpb"] > data.entropy_bpb  # no model beats the corpus's true entropy
    # the windows' second halves (tests/test_model.py checks the figure itself): not below it either
    assert data.entropy_bpb < r["val_bpb_context"] < math.log2(c.vocab_size) * data.tokens_per_byte()


def test_same_seed_same_losses_and_seed_matters():
    c = tiny()
    data = _data(c)
    a = train(c, data).history
    b = train(c, data).history
    other = train(c.replace(seed=7), data).history
    assert a == [dict(h, elapsed_s=x["elapsed_s"]) for h, x in zip(b, a)]
    assert [h["val_loss"] for h in other] != [h["val_loss"] for h in a]


# Every block design and muP at once (tiny's 32 wide is muP's width multiplier 2 over 16).
MODERN_MUP = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, n_kv_head=1, qk_norm=True,
                  tie_embeddings=False, parametrization="mup", mup_base_width=16)


@pytest.mark.parametrize("design", [{}, MODERN_MUP], ids=["gpt2", "modern-mup"])
def test_restored_checkpoint_continues_bit_identically(tmp_path, design):
    c = tiny(max_iters=40, eval_interval=10, dropout=0.1, **design)
    data = _data(c)
    full = []
    train(c, data, report=lambda m, save: full.append(m))

    class Stop(Exception):
        pass

    def stop_at_20(m, save):
        if m["iteration"] == 20:
            save(tmp_path / "ck")
            raise Stop

    with pytest.raises(Stop):
        train(c, data, report=stop_at_20)
    resumed = []
    result = train(c, data, report=lambda m, save: resumed.append(m), resume_from=tmp_path / "ck")
    assert [r["iteration"] for r in resumed] == [30, 40]
    for a, b in zip(full[2:], resumed):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])  # bit for bit
    assert [h["iteration"] for h in result.history] == [10, 20, 30, 40]  # history continues


def test_nan_loss_reports_diverged():
    c = tiny(learning_rate=1e6, grad_clip=0.0, warmup_iters=0, max_iters=200, eval_interval=50)
    reports = []
    result = train(c, _data(c), report=lambda m, save: reports.append(m))
    assert result.status == "diverged"
    assert reports[-1]["status"] == "diverged" and reports[-1]["iteration"] < 200


def test_schedule_warmup_then_cosine_to_min():
    c = tiny(max_iters=100, warmup_iters=10, learning_rate=1e-3)
    assert lr_at(c, 0) < lr_at(c, 5) < lr_at(c, 9) <= 1e-3
    assert lr_at(c, 10) == pytest.approx(1e-3)
    assert lr_at(c, 100) == pytest.approx(c.min_lr)
    assert lr_at(c, 55) == pytest.approx((1e-3 + c.min_lr) / 2)


def test_too_small_validation_split_is_a_user_error():
    from slm_tune.errors import UserError
    c = tiny(block_size=32, dataset="storyworld:train=50,validation=1")
    data = prepare_tokens(c.dataset, c.vocab_size)
    with pytest.raises(UserError, match="too few for block_size"):
        train(c.replace(block_size=512), data)


@pytest.mark.parametrize("design", [{}, MODERN_MUP], ids=["gpt2", "modern-mup"])
def test_compiled_model_trains_like_eager(design):
    c = tiny(max_iters=20, eval_interval=10, **design)
    data = _data(c)
    eager = train(c, data).history
    compiled = train(c.replace(compile=True), data).history
    for a, b in zip(eager, compiled):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-3)


def test_runs_in_one_process_each_compile_afresh(caplog):
    """A reused Ray worker trains model after model. With room for just one run's graphs (train
    and eval) and a hard failure past it, a second shape still compiles: nothing piles up."""
    import torch._dynamo

    data = _data(tiny())
    with torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True), \
            caplog.at_level("WARNING", logger="slm_tune.train"):
        for n_embd in (32, 48):
            train(tiny(n_embd=n_embd, max_iters=2, eval_interval=2, compile=True), data)
    assert "torch.compile failed" not in caplog.text


def test_compile_auto_weighs_the_time_left_against_the_expected_cost(tmp_path):
    from slm_tune.model.compiling import COLD_COST_S, GAIN, WARM_COST_S, CompileCosts, CompilePlan

    costs = CompileCosts(tmp_path)
    assert costs.expected("a")[0] == COLD_COST_S  # nothing measured on this machine yet
    long_run = CompilePlan("auto", "a", costs)
    seconds_left = 1.2 * COLD_COST_S / GAIN  # 7% of it is a little more than a first compile
    decisions = [long_run.observe_eager_step(1.0, round(seconds_left)) for _ in range(3)]
    assert decisions == [False, False, True] and long_run.compiled and "auto: compiled" in long_run.why
    short_run = CompilePlan("auto", "a", costs)
    assert not any(short_run.observe_eager_step(1.0, round(0.8 * COLD_COST_S / GAIN)) for _ in range(3))
    assert short_run.decided and not short_run.compiled and "less than compiling" in short_run.why
    # what compiling cost is recorded: a shape seen before expects the warm cost, a new one this
    # machine's first-compile cost
    costs.record("a", 40.0)
    assert costs.expected("a")[0] == WARM_COST_S
    assert costs.expected("b") == (40.0, "this machine's first compile of a shape (1 measured)")
    costs.record("a", 3.0)
    assert costs.expected("a")[0] == 3.0
    # the saving per step is learned per shape too: a shape compiling barely speeds up stays eager
    assert costs.expected_gain("c") == (GAIN, "baseline's")
    costs.record("c", None, gain=0.005)
    assert costs.expected_gain("c")[0] == 0.005
    barely = CompilePlan("auto", "c", costs)
    assert not any(barely.observe_eager_step(1.0, round(seconds_left)) for _ in range(3))
    assert "saving 0% of that (measured for this shape)" in barely.why
    fixed = CompilePlan("false", "a", costs)
    assert fixed.decided and not fixed.compiled and not fixed.observe_eager_step(1.0, 10**9)


def test_a_short_auto_run_stays_eager_and_says_why():
    c = tiny(max_iters=30, eval_interval=10, compile="auto")
    reports = []
    result = train(c, _data(c), report=lambda m, save: reports.append(m))
    assert result.compile["compiled"] is False
    assert result.compile["compile_note"].startswith("auto: eager: 26 iterations left")
    evals = [r for r in reports if r["kind"] == "eval"]
    assert evals[-1]["compile_note"] == result.compile["compile_note"] and evals[-1]["compiled"] is False
