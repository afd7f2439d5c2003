"""The block designs (README "Architectures"), each checked against a formula written here rather
than against the code under test, and the GPT-2 defaults against what the model computed before
the settings existed."""

import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from conftest import run_cli, tiny
from slm_tune.config import ARCHITECTURE, EXPERIMENT_CONFIGS, ExperimentConfig
from slm_tune.errors import UserError
from slm_tune.model.counts import flops_per_token, kv_cache_bytes_per_token, param_counts, training_flops
from slm_tune.model.gpt import GPT, MLP, CausalSelfAttention, apply_rope, make_norm, rope_tables
from slm_tune.space import MUTABLE

FIXTURES = Path(__file__).parent / "fixtures"
LLAMA = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False)


def test_defaults_sample_the_tokens_and_init_the_weights_of_before():
    sys.path.insert(0, str(FIXTURES))
    from make_legacy_samples import HERE, INIT, samples, weights_digest

    recorded = json.loads((HERE / "legacy_samples.json").read_text())
    for name, tokens in recorded["files"].items():
        assert samples(HERE / "legacy_study" / name) == tokens, name
    torch.manual_seed(0)
    assert weights_digest(GPT(ExperimentConfig(**INIT))) == recorded["init"]["digest"]


def _designs():
    choices = dict(norm=("layernorm", "rmsnorm"), pos=("learned", "rope"), mlp=("gelu", "swiglu"),
                   n_kv_head=(1, 2, 4), tie_embeddings=(True, False), bias=(True, False), qk_norm=(False, True))
    for values in itertools.product(*choices.values()):
        yield dict(zip(choices, values))


def test_counts_match_built_models_for_every_design(one_thread):
    """Parameters against the model's tensors; FLOPs against torch's FLOP counter on a training step
    (attention through the math kernel, whose matmuls the counter sees)."""
    x = torch.randint(0, 300, (2, 16))
    for design in _designs():
        c = ExperimentConfig(vocab_size=300, n_embd=32, n_layer=2, n_head=4, block_size=16, fused_loss=False,
                             mlp_hidden=48 if design["mlp"] == "swiglu" else 0, **design)
        model = GPT(c)
        assert param_counts(c)[0] == sum(p.numel() for p in model.parameters()), design
        vocab_sized = {"wte.weight", "wpe.weight", "lm_head.weight"}
        non_embedding = sum(p.numel() for n, p in model.named_parameters() if n not in vocab_sized)
        assert param_counts(c)[1] == non_embedding, design
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x, x).backward()
        assert counter.get_total_flops() == flops_per_token(c) * x.numel(), design


def _reference_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate each pair (i, i + d/2) of every position m by the angle m * theta^(-2i/d), one 2x2
    rotation matrix at a time."""
    T, d = x.shape[-2], x.shape[-1]
    out = torch.empty_like(x)
    for m in range(T):
        for i in range(d // 2):
            a = m * theta ** (-2 * i / d)
            rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=x.dtype)
            pair = torch.stack((x[..., m, i], x[..., m, i + d // 2]), dim=-1)
            turned = pair @ rot.T
            out[..., m, i], out[..., m, i + d // 2] = turned[..., 0], turned[..., 1]
    return out


def test_rope_is_the_rotation_and_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    cos, sin = rope_tables(8, 10, 500.0)
    torch.testing.assert_close(apply_rope(x, cos.double(), sin.double()), _reference_rope(x, 500.0),
                               rtol=1e-5, atol=1e-6)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    cos, sin = rope_tables(8, 64, 10_000.0)

    def score(m: int, n: int) -> float:
        qm = apply_rope(q.expand(64, 8), cos.double(), sin.double())[m]
        kn = apply_rope(k.expand(64, 8), cos.double(), sin.double())[n]
        return float(qm @ kn)

    for m, n in ((5, 2), (9, 9), (3, 0)):
        for shift in (1, 17, 50):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), rel=1e-5, abs=1e-6)
    assert score(5, 2) != pytest.approx(score(5, 4), rel=1e-3)


def _attention_by_hand(attn: CausalSelfAttention, x: torch.Tensor, kv_heads: int, scale: float | None = None):
    """softmax(q k^T * scale + causal mask) v per head (scale 1/sqrt(d) unless given), query head h
    reading key/value head h // (n_head / kv_heads), then the output projection."""
    B, T, C = x.shape
    H, d = attn.n_head, C // attn.n_head
    W, b = attn.c_attn.weight, attn.c_attn.bias
    qkv = x @ W.T + (b if b is not None else 0)
    q, k, v = qkv[..., :C], qkv[..., C:C + kv_heads * d], qkv[..., C + kv_heads * d:]
    mask = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
    heads = []
    for h in range(H):
        g = h // (H // kv_heads)
        qh, kh, vh = q[..., h * d:(h + 1) * d], k[..., g * d:(g + 1) * d], v[..., g * d:(g + 1) * d]
        scores = qh @ kh.transpose(-1, -2) * (scale if scale is not None else 1 / math.sqrt(d))
        heads.append(torch.softmax(scores + mask, dim=-1) @ vh)
    return attn.c_proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # multi-head, grouped, multi-query
def test_attention_with_n_kv_head_against_hand_computation(kv_heads):
    torch.manual_seed(0)
    c = ExperimentConfig(vocab_size=300, n_embd=32, n_head=4, block_size=16, n_kv_head=kv_heads)
    attn = CausalSelfAttention(c).eval()
    assert attn.c_attn.weight.shape == (32 + 2 * kv_heads * 8, 32)
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _attention_by_hand(attn, x, kv_heads), rtol=1e-5, atol=1e-6)


def test_rmsnorm_and_swiglu_against_their_formulas():
    torch.manual_seed(0)
    c = ExperimentConfig(vocab_size=300, n_embd=32, n_head=4, norm="rmsnorm", mlp="swiglu", bias=False)
    norm = make_norm(c, 32)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(32) + 0.5)
    x = 3 * torch.randn(4, 7, 32)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-6)
    assert c.mlp_width == 128  # 8/3 x 32 = 85.3, up to a multiple of 64
    mlp = MLP(c)
    w_gate, w_up = mlp.c_fc.weight[:128], mlp.c_fc.weight[128:]
    expected = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-5)


def test_untied_head_trains_and_saves_both_matrices(tmp_path):
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.model.checkpoints import load_state
    from slm_tune.train import train

    c = tiny(tie_embeddings=False, **LLAMA, n_kv_head=1, qk_norm=True, max_iters=10, eval_interval=10)
    saved = []
    train(c, prepare_tokens(c.dataset, c.vocab_size), report=lambda m, save: save and saved.append(save))
    saved[-1](tmp_path)
    state = load_state(tmp_path / "state.pt")["model"]
    torch.manual_seed(c.seed)
    fresh = GPT(c).state_dict()
    assert {"wte.weight", "lm_head.weight"} <= set(state) and "wpe.weight" not in state
    assert not torch.equal(state["wte.weight"], state["lm_head.weight"])
    for key in ("wte.weight", "lm_head.weight"):
        assert not torch.equal(state[key], fresh[key]), f"{key} did not train"


def test_bfloat16_autocast_keeps_every_design_close_to_float32():
    torch.manual_seed(0)
    c = ExperimentConfig(vocab_size=500, n_embd=64, n_layer=2, n_head=4, block_size=32, n_kv_head=2,
                         qk_norm=True, tie_embeddings=False, **LLAMA)
    model = GPT(c)
    x = torch.randint(0, 500, (4, 32))
    full = model(x, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(x, x)
    half.backward()
    assert half.dtype == torch.float32 and abs(half.item() - full.item()) < 0.05


def test_architecture_settings_are_validated_in_one_line():
    for settings, text in (({"n_kv_head": 3}, "must divide n_head=4"), ({"norm": "batchnorm"}, "layernorm, rmsnorm"),
                           ({"pos": "rope", "n_embd": 36, "n_head": 4}, "even head size"),
                           ({"mlp": "relu"}, "gelu, swiglu"), ({"rope_theta": 0}, "positive")):
        with pytest.raises(UserError, match=text):
            EXPERIMENT_CONFIGS["baseline"].replace(**settings)
    ran = run_cli("details", "baseline", "--set", "pos=rope", "--set", "n_kv_head=3")
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "n_kv_head=3" in ran.stderr


def test_new_experiments_hold_baselines_parameters_and_the_modern_study_its_flops():
    from search_spaces import get_study

    base = EXPERIMENT_CONFIGS["baseline"]
    for name in ("arch_llama", "arch_gqa", "arch_deep_thin"):
        c = EXPERIMENT_CONFIGS[name]
        assert abs(param_counts(c)[0] / param_counts(base)[0] - 1) < 0.002, name
    assert EXPERIMENT_CONFIGS["arch_deep_thin"].n_layer == 2 * base.n_layer
    assert kv_cache_bytes_per_token(EXPERIMENT_CONFIGS["arch_gqa"]) * 2 == kv_cache_bytes_per_token(base)
    untied = EXPERIMENT_CONFIGS["arch_untied"]
    assert param_counts(untied)[0] - param_counts(base)[0] == base.vocab_size * base.n_embd
    assert flops_per_token(untied) == flops_per_token(base)
    study = get_study("modern")
    for longest in (None, 60):
        configs = study.configs(longest)
        budget = training_flops(configs["baseline"])
        assert configs["baseline"].max_iters == (longest or base.max_iters)
        for c in configs.values():
            assert abs(training_flops(c) / budget - 1) <= 0.5 / c.max_iters + 1e-9, c.name
            assert c.eval_interval == configs["baseline"].eval_interval


def test_pbt_never_mutates_an_architecture_setting(tmp_path):
    from slm_tune.space import load_space_file

    assert not set(MUTABLE) & set(ARCHITECTURE)
    space = tmp_path / "arch_pbt.toml"
    space.write_text('base = "optimal_fast"\nlearning_rate = { loguniform = [1e-4, 1e-2] }\n'
                     'norm = { choice = ["layernorm", "rmsnorm"] }\nn_kv_head = { choice = [1, 2, 4] }\n')
    assert set(load_space_file(space, EXPERIMENT_CONFIGS).pbt_mutations()) == {"learning_rate"}


def test_a_checkpoint_resumes_only_under_its_own_shape(tmp_path):
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    c = tiny(max_iters=10, eval_interval=10)
    saved = []
    data = prepare_tokens(c.dataset, c.vocab_size)
    train(c, data, report=lambda m, save: save and saved.append(save))
    saved[-1](tmp_path)
    with pytest.raises(UserError, match="norm='layernorm', but this run has norm='rmsnorm'"):
        train(c.replace(norm="rmsnorm", max_iters=20), data, resume_from=tmp_path)
