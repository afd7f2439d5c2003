"""muP (README "muP"): the model's multipliers and the optimizer's groups against Microsoft's `mup`
package (every block design) and the paper's rules written out here, the base width as today's
model, and the coordinate check's slopes."""

import csv
import math

import pytest
import torch
from torch.nn import functional as F

from conftest import TINY_DATASET, run_cli, tiny
from slm_tune.config import EXPERIMENT_CONFIGS, ExperimentConfig
from slm_tune.errors import UserError
from slm_tune.model.gpt import GPT, CausalSelfAttention
from slm_tune.train.optimizer import follow_new_config, load_optimizer_state, make_optimizer, set_lr
from test_architectures import _attention_by_hand, _designs

mup = pytest.importorskip("mup", reason="Microsoft's mup, the reference: python bootstrap.py installs it (pip install --no-deps mup)")


def test_mup_at_its_base_width_is_the_standard_model():
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    c = tiny(max_iters=20, eval_interval=10)
    data = prepare_tokens(c.dataset, c.vocab_size)
    sp = [h["val_loss"] for h in train(c, data).history]
    mup = [h["val_loss"] for h in train(c.replace(parametrization="mup", mup_base_width=c.n_embd), data).history]
    assert sp == mup  # bit for bit


def test_mup_init_multipliers_and_learning_rates_follow_the_width():
    c = tiny(n_embd=256, n_head=4, n_layer=2, parametrization="mup", mup_base_width=64)  # width multiplier 4
    torch.manual_seed(0)
    model = GPT(c)
    std = {n: p.std().item() for n, p in model.named_parameters()}
    assert std["blocks.0.attn.c_attn.weight"] == pytest.approx(0.02 / 2, rel=0.03)  # variance / 4
    assert std["blocks.0.mlp.c_proj.weight"] == pytest.approx(0.02 / 2 / 2, rel=0.03)  # GPT-2's 1/sqrt(2 L) too
    assert std["wte.weight"] == pytest.approx(0.02, rel=0.03)  # the embedding keeps its init
    idx = torch.randint(0, c.vocab_size, (2, 16))
    expected = F.linear(model.hidden(idx)[:, -1] * (64 / 256), model.wte.weight)
    torch.testing.assert_close(model.logits(idx), expected)
    model.output_mult = c.replace(mup_output_mult=3.0).output_multiplier  # the tunable logit multiplier
    torch.testing.assert_close(model.logits(idx), F.linear(model.hidden(idx)[:, -1] * (3.0 * 64 / 256),
                                                           model.wte.weight))
    with pytest.raises(UserError, match="mup_output_mult=2.0 is invalid: applies under parametrization=mup only"):
        tiny(mup_output_mult=2.0)

    optimizer = make_optimizer(model, c)
    set_lr(optimizer, 1e-3)
    # muP's hidden matrices, by name: both fan-ins grow with width (Tensor Programs V, table 3);
    # the embeddings, norms and biases keep the base rate
    params = dict(model.named_parameters())
    hidden = {id(params[f"blocks.{i}.{m}.weight"]) for i in range(2)
              for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= hidden or not ids & hidden
        assert group["lr"] == pytest.approx(1e-3 * 64 / 256 if ids <= hidden else 1e-3)
        if ids <= hidden:  # MuAdamW's rule: each hidden matrix decays by the base width's lr x wd per step
            assert group["lr"] * group["weight_decay"] == pytest.approx(1e-3 * c.weight_decay) and c.weight_decay > 0
    # PBT's exploit: the donor's optimizer state under a new rate and decay, each group scaled as its own
    exploit = c.replace(learning_rate=4e-3, weight_decay=0.3)
    restored = make_optimizer(model, exploit)
    load_optimizer_state(restored, optimizer.state_dict())
    state = {"iteration": 5}
    follow_new_config(exploit, c.to_dict(), state)
    set_lr(restored, 4e-3)
    assert sorted(g["lr"] for g in restored.param_groups) == pytest.approx([1e-3, 4e-3, 4e-3])
    assert sorted(g["weight_decay"] for g in restored.param_groups) == pytest.approx([0.0, 0.3, 0.3 * 4])
    assert state["config_changes"][0]["changes"]["weight_decay"] == [0.1, 0.3]
    with pytest.raises(UserError, match="does not fit this run's parameter groups .* start the run without resuming"):
        sp = c.replace(parametrization="sp")  # one group for every matrix: another layout
        load_optimizer_state(restored, make_optimizer(GPT(sp), sp).state_dict())


BASE_WIDTH = 64


def _base_model_config(c: ExperimentConfig) -> ExperimentConfig:
    """The same design at muP's base width, as mup's users write a base model: heads of the base
    head size, the same share of key/value heads, and the mlp's own rule at that width."""
    base_head = c.mup_base_head_size or c.mup_base_width // c.n_head
    heads = c.mup_base_width // base_head
    return c.replace(n_embd=c.mup_base_width, n_head=heads, n_kv_head=c.n_kv_head * heads // c.n_head)


def _gpt2_init_std(name: str, c: ExperimentConfig) -> float:
    """GPT-2's init at the base width: 0.02 everywhere, residual projections 0.02 / sqrt(2 L)."""
    return 0.02 / math.sqrt(2 * c.n_layer) if name.endswith("c_proj.weight") else 0.02


def _check_against_mup(c: ExperimentConfig, lr: float = 1e-3) -> None:
    torch.manual_seed(0)
    model = GPT(c)
    mup.set_base_shapes(model, GPT(_base_model_config(c)), rescale_params=False, do_assert=False)
    mup.shape.assert_hidden_size_inf(model.blocks)  # no hidden layer of a fixed size (what mup refuses)
    mine = make_optimizer(model, c)
    set_lr(mine, lr)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    theirs = mup.MuAdamW([{"params": matrices, "weight_decay": c.weight_decay},
                          {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}], lr=lr)
    rule = {id(p): (g["lr"], g["weight_decay"]) for opt in (theirs,) for g in opt.param_groups for p in g["params"]}
    for group in mine.param_groups:
        for p in group["params"]:
            assert (group["lr"], group["weight_decay"]) == pytest.approx(rule[id(p)], rel=1e-12), (c, p.infshape)
    for name, p in model.named_parameters():  # mup.init's normal_: std x width_mult^-1/2 for a matrix-like one
        if p.dim() >= 2 and c.n_embd != BASE_WIDTH:
            expected = _gpt2_init_std(name, c) * (p.infshape.width_mult() ** -0.5 if p.infshape.ninf() == 2 else 1)
            assert p.std().item() == pytest.approx(expected, rel=4 / math.sqrt(2 * p.numel()) + 1e-3), name
    # the logits' multiplier is 1/width_mult of the head's fan-in, as mup's MuReadout; attention 1/head size
    assert model.output_mult == pytest.approx(c.mup_output_mult / model.head_weight.infshape.width_mult())
    base_head = _base_model_config(c).head_size
    assert (c.attention_scale or c.head_size ** -0.5) == pytest.approx(math.sqrt(base_head) / c.head_size)


@pytest.mark.parametrize("width", [BASE_WIDTH, 192, 512])
def test_mup_rates_decay_and_init_are_microsofts_mup_for_every_design(width, one_thread):
    """Every parameter's rate and weight decay against mup.MuAdamW's after mup.set_base_shapes on the
    same design at the base width, and its init std against mup's rule: each matrix by its own fan-in
    ratio (swiglu's down-projection: 512/192 = 2.67 at 192 wide, 1408/192 = 7.33 at 512, not 3 and 8)."""
    for design in _designs():
        c = ExperimentConfig(vocab_size=300, n_embd=width, n_layer=1, n_head=4, block_size=16, parametrization="mup",
                             mup_base_width=BASE_WIDTH, **design)
        _check_against_mup(c)
    # heads of a fixed size (the base has fewer), grouped key/value heads in the same share
    _check_against_mup(ExperimentConfig(vocab_size=300, n_embd=width, n_layer=2, n_head=width // 32, n_kv_head=width // 64,
                                        block_size=16, parametrization="mup", mup_base_width=BASE_WIDTH,
                                        mup_base_head_size=32, mlp="swiglu", norm="rmsnorm", pos="rope"))


def test_a_fixed_mlp_width_under_mup_is_refused_away_from_the_base_width(tmp_path):
    fixed = dict(vocab_size=300, n_layer=1, n_head=4, block_size=16, mlp_hidden=96)
    # why: an MLP that keeps its size as the width grows has hidden layers of a fixed size, which mup refuses
    with pytest.raises(AssertionError):
        mup.set_base_shapes(GPT(ExperimentConfig(n_embd=128, **fixed)), GPT(ExperimentConfig(n_embd=64, **fixed)))
    with pytest.raises(UserError, match=r"mlp_hidden=96 is invalid: is a fixed size, but muP scales every hidden "
                                        r"matrix with the width \(n_embd=128, mup_base_width=64\); leave it at 0"):
        ExperimentConfig(n_embd=128, parametrization="mup", mup_base_width=64, **fixed)
    assert ExperimentConfig(n_embd=64, parametrization="mup", mup_base_width=64, **fixed).mlp_width == 96  # the base
    assert ExperimentConfig(n_embd=128, **fixed).mlp_width == 96  # sp: any size at any width
    # swiglu rounds to multiples of 64: at 72 wide its MLP is the 64-wide base's 192, a hidden size that
    # does not grow (mup refuses that model too); at 128 it is 384
    swiglu = dict(vocab_size=300, n_layer=1, n_head=4, block_size=16, mlp="swiglu", norm="rmsnorm", pos="rope")
    with pytest.raises(AssertionError):
        mup.set_base_shapes(GPT(ExperimentConfig(n_embd=72, **swiglu)), GPT(ExperimentConfig(n_embd=64, **swiglu)))
    with pytest.raises(UserError, match=r"n_embd=72 is invalid: gives the swiglu MLP the base width's hidden size \(192"):
        ExperimentConfig(n_embd=72, parametrization="mup", mup_base_width=64, **swiglu)
    assert ExperimentConfig(n_embd=128, parametrization="mup", mup_base_width=64, **swiglu).mlp_width_mult == 2
    for c in EXPERIMENT_CONFIGS.values():  # every named experiment takes muP at its own width
        c.replace(parametrization="mup", mup_base_width=c.n_embd)
    ran = run_cli("coord-check", "--experiment", "arch_gqa", "--widths", "64,128", "--output-dir", str(tmp_path),
                  "--dataset", TINY_DATASET)  # refused before anything runs
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1 and "mlp_hidden=784" in ran.stderr
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("parametrization, expected", [("sp", 0.05), ("mup", 0.05 / 2)])
def test_hidden_init_std_sets_the_blocks_matrices_at_the_base_width(parametrization, expected):
    # width 256 from base 64: muP's std is hidden_init_std x sqrt(64/256); sp's is hidden_init_std
    c = tiny(n_embd=256, n_head=4, n_layer=2, parametrization=parametrization, mup_base_width=64, hidden_init_std=0.05)
    torch.manual_seed(0)
    std = {n: p.std().item() for n, p in GPT(c).named_parameters()}
    assert std["blocks.1.mlp.c_fc.weight"] == pytest.approx(expected, rel=0.03)
    assert std["blocks.1.attn.c_proj.weight"] == pytest.approx(expected / 2, rel=0.03)  # GPT-2's 1/sqrt(2 L), L = 2
    assert std["wte.weight"] == pytest.approx(0.02, rel=0.03) and std["wpe.weight"] == pytest.approx(0.02, rel=0.03)
    with pytest.raises(UserError, match="hidden_init_std=0.0 is invalid: must be positive"):
        c.replace(hidden_init_std=0)


def test_mup_attention_scores_scale_as_one_over_head_size():
    torch.manual_seed(0)
    c = tiny(n_embd=64, n_head=2, parametrization="mup", mup_base_width=16)  # head 32, base head 8
    assert c.attention_scale == pytest.approx(8 ** 0.5 / 32)
    attn = CausalSelfAttention(c).eval()
    x = torch.randn(2, 12, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _attention_by_hand(attn, x, 2, scale=8 ** 0.5 / 32), rtol=1e-5, atol=1e-6)
    # the attention multiplier: mult x sqrt(base head) / head, and mult / sqrt(head) at the base head size
    scaled = c.replace(mup_attn_mult=4.0)
    attn = CausalSelfAttention(scaled).eval()
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _attention_by_hand(attn, x, 2, scale=4 * 8 ** 0.5 / 32), rtol=1e-5, atol=1e-6)
    assert c.replace(n_embd=16, mup_attn_mult=4.0).attention_scale == pytest.approx(4 / 8 ** 0.5)
    assert c.replace(n_embd=16).attention_scale is None  # SDPA's own 1/sqrt(head size) at the base
    with pytest.raises(UserError, match="parametrization='mu' is invalid: must be one of sp, mup"):
        c.replace(parametrization="mu")
    with pytest.raises(UserError, match="mup_attn_mult=2.0 is invalid: applies under parametrization=mup only"):
        tiny(mup_attn_mult=2.0)


# The coordinate check's model (bench/coord_check.png is this command's, gpt2 design): GPT-2's
# blocks, and one design with every other block option at once.
COORD_CHECK = ("coord-check", "--experiment", "baseline", "--widths", "64,128,256,512", "--steps", "5",
               "--set", "vocab_size=1000", "--set", "n_layer=2", "--set", "block_size=32", "--dataset", TINY_DATASET)
EVERY_OTHER_DESIGN = ("norm=rmsnorm", "pos=rope", "mlp=swiglu", "bias=false", "n_kv_head=2", "tie_embeddings=false",
                      "qk_norm=true")


@pytest.mark.parametrize("design", [(), EVERY_OTHER_DESIGN], ids=["gpt2", "every_other_option"])
def test_coord_check_is_flat_under_mup_and_grows_under_sp(tmp_path, one_thread, design):
    sets = [arg for setting in design for arg in ("--set", setting)]
    ran = run_cli(*COORD_CHECK, *sets, "--output-dir", str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    out = tmp_path / "experiments"
    assert (out / "coord_check.png").stat().st_size > 10_000 and (out / "coord_check.csv").is_file()
    rows = list(csv.DictReader((out / "coord_check_slopes.csv").open()))
    slope = {(r["layer"], int(r["step"])): (float(r["sp_slope"]), float(r["mup_slope"])) for r in rows}
    assert {layer for layer, _ in slope} == {"embedding", "attention.0", "mlp.0", "attention.1", "mlp.1", "logits"}
    for (layer, step), (sp, mup) in slope.items():
        if layer != "logits":
            assert abs(mup) < 0.3, (layer, step, mup)  # flat in width
            if layer != "embedding":
                assert sp > 0.8, (layer, step, sp)  # grows about as fast as width
        else:
            assert mup < 0.2 and (step < 4 or abs(mup) < 0.3), (step, mup)  # shrinks at init (the head's 1/width multiplier), then flat
            assert sp > 0.3 and (step < 4 or sp > 0.6), (step, sp)
