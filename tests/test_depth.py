"""Depth parametrizations (completep, depth_mup) against CompleteP's table written out here: the
residual branch multiplier, the init, every parameter's rate, decay and Adam epsilon, the base
depth as today's model bit for bit, and one-line refusals."""

import pytest
import torch

from conftest import TINY_SETS, run_cli, tiny
from slm_tune.errors import UserError
from slm_tune.model.gpt import GPT
from slm_tune.train.optimizer import make_optimizer, set_lr


def test_a_depth_parametrization_at_its_base_depth_is_the_standard_model():
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    c = tiny(n_layer=2, max_iters=20, eval_interval=10)
    data = prepare_tokens(c.dataset, c.vocab_size)
    plain = [h["val_loss"] for h in train(c, data).history]
    for kind in ("completep", "depth_mup"):
        same = [h["val_loss"] for h in train(c.replace(depth_parametrization=kind, base_depth=2), data).history]
        assert same == plain, kind  # bit for bit


BASE_EPS = 1e-8  # Adam's epsilon at the base shape: torch's default, which no run changes


def _kind(name: str, p: torch.Tensor) -> str:
    if name.startswith("blocks."):
        return "hidden matrix" if p.dim() == 2 else "hidden vector"
    return "embedding" if p.dim() == 2 else "final norm"


@pytest.mark.parametrize("parametrization", ["sp", "mup"])
@pytest.mark.parametrize("kind,alpha", [("completep", 1.0), ("depth_mup", 0.5)])
def test_branches_init_rates_decay_and_epsilon_are_completeps_table(kind, alpha, parametrization):
    """CompleteP's table 1 and its eq. 40 (Dey et al. 2025, as EleutherAI's nanoGPT-mup completep
    branch applies them), written out here: 4 layers over a base depth of 1 (m_L = 4), 64 wide over
    a base of 32 under muP (m_N = 2; 1 under sp), alpha 1 for completep and 1/2 for depth_mup."""
    m_L, m_N = 4, 2 if parametrization == "mup" else 1
    c = tiny(n_embd=64, n_head=2, n_layer=4, depth_parametrization=kind, base_depth=1,
             parametrization=parametrization, mup_base_width=32)
    torch.manual_seed(0)
    model = GPT(c)
    block = model.blocks[2]  # each residual branch x m_L^-alpha
    x = torch.randn(2, 8, c.n_embd)
    with torch.no_grad():
        h = x + m_L ** -alpha * block.attn(block.ln_1(x))
        torch.testing.assert_close(block(x), h + m_L ** -alpha * block.mlp(block.ln_2(h)))
    # hidden init variance sigma^2 / m_N, nothing in depth: GPT-2's residual init at the base depth, 0.02 / sqrt(2 x 1)
    assert model.blocks[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 2 ** 0.5 / m_N ** 0.5, rel=0.05)
    lr, wd = 1e-3, c.weight_decay
    expected = {  # (rate, weight decay, epsilon)
        "hidden matrix": (lr / m_N * m_L ** (alpha - 1), wd * m_N, BASE_EPS / m_N * m_L ** -alpha),
        "hidden vector": (lr * m_L ** (alpha - 1), 0.0, BASE_EPS / m_N * m_L ** -alpha),
        "embedding": (lr, wd, BASE_EPS / m_N),
        "final norm": (lr, 0.0, BASE_EPS / m_N),
    }
    optimizer = make_optimizer(model, c)
    set_lr(optimizer, lr)
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        group = groups[id(p)]
        assert (group["lr"], group["weight_decay"], group["eps"]) == pytest.approx(expected[_kind(name, p)]), name


def test_depth_settings_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="depth_parametrization='deep' is invalid: must be one of none, completep"):
        tiny(depth_parametrization="deep")
    with pytest.raises(UserError, match="base_depth=0 is invalid: must be set with a depth parametrization"):
        tiny(depth_parametrization="completep")
    with pytest.raises(UserError, match="base_depth=2 is invalid: applies with a depth parametrization only"):
        tiny(base_depth=2)
    ran = run_cli("run", "optimal_fast", "--output-dir", str(tmp_path), *TINY_SETS,
                  "--set", "depth_parametrization=complete")
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1 and "depth_parametrization" in ran.stderr
    assert not (tmp_path / "ray_results").exists()
