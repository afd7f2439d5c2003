import math

import pytest
import torch
from torch.nn import functional as F

from slm_tune.config import EXPERIMENT_CONFIGS
from slm_tune.model.losses import linear_cross_entropy
from slm_tune.model.counts import flops_per_token, param_counts
from slm_tune.model.gpt import GPT


def test_baseline_parameter_count_by_hand():
    c = EXPERIMENT_CONFIGS["baseline"]
    V, C, T, L = 50_257, 256, 128, 4
    per_layer = (2 * C) + (C * 3 * C + 3 * C) + (C * C + C) + (2 * C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    total = V * C + T * C + L * per_layer + 2 * C
    assert param_counts(c) == (total, total - V * C - T * C)
    assert 15.9e6 < total < 16.2e6  # "about 16M with tying"
    model = GPT(c)
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.lm_head is None and model.head_weight is model.wte.weight  # tied: one matrix


def test_counts_match_models_for_every_experiment():
    for c in EXPERIMENT_CONFIGS.values():
        if c.n_embd <= 256:
            assert param_counts(c)[0] == sum(p.numel() for p in GPT(c).parameters()), c.name


def test_flops_per_token_baseline_about_98M():
    assert 95e6 < flops_per_token(EXPERIMENT_CONFIGS["baseline"]) < 100e6


def test_fused_loss_matches_cross_entropy_and_its_gradients():
    torch.manual_seed(0)
    h = torch.randn(300, 16, requires_grad=True)
    w = (0.3 * torch.randn(5000, 16)).requires_grad_()  # 5000 wide: several chunks
    t = torch.randint(0, 5000, (300,))
    loss = linear_cross_entropy(h, w, t)
    loss.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.t(), t)
    ref.backward()
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-5)
    torch.testing.assert_close(gh, h.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(gw, w.grad, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        assert math.isclose(linear_cross_entropy(h, w, t).item(), ref.item(), rel_tol=1e-5)


def test_fused_loss_under_bf16_autocast_is_close():
    torch.manual_seed(0)
    h = torch.randn(256, 64, requires_grad=True)
    w = (0.1 * torch.randn(3000, 64)).requires_grad_()
    t = torch.randint(0, 3000, (256,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, t)
    loss.backward()
    assert loss.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert abs(loss.item() - F.cross_entropy(h @ w.t(), t).item()) < 0.02


def test_generate_extends_the_prompt(tiny_config):
    model = GPT(tiny_config()).eval()
    out = model.generate(torch.tensor([[1, 2, 3]]), 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 8) and out[0, :3].tolist() == [1, 2, 3]


def test_eval_losses_are_whole_windows_and_their_later_positions(tiny_config):
    for fused in (True, False):  # vocabulary 5000: the fused loss walks it in chunks
        c = tiny_config(vocab_size=5000, block_size=16, fused_loss=fused)
        torch.manual_seed(0)
        model = GPT(c).eval()
        x, y = torch.randint(0, 5000, (3, 16)), torch.randint(0, 5000, (3, 16))
        whole, late = model.eval_losses(x, y, 10)
        assert whole.shape == late.shape == (3,)
        whole, late = whole.mean().item(), late.mean().item()  # every window has 16 (or 6) positions
        with torch.no_grad():
            per_token = F.cross_entropy(F.linear(model.hidden(x), model.wte.weight).reshape(-1, 5000),
                                        y.reshape(-1), reduction="none").view(3, 16)
            assert whole == pytest.approx(model(x, y).item(), rel=1e-5)
        assert whole == pytest.approx(per_token.mean().item(), rel=1e-5)
        assert late == pytest.approx(per_token[:, 10:].mean().item(), rel=1e-5)
