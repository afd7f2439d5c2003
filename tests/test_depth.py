"""Depth parametrizations (completep, depth_mup) against their rules written out here: the
residual branch multiplier, the blocks' rates and decay, the init, the base depth as today's
model bit for bit, and one-line refusals."""

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


@pytest.mark.parametrize("kind,branch,rate", [("completep", 1 / 4, 1.0), ("depth_mup", 1 / 2, 1 / 2)])
def test_branches_rates_and_decay_follow_the_depth(kind, branch, rate):
    # 4 layers over a base depth of 1: completep scales branches by 1/L (rates as at the base),
    # depth-muP by 1/sqrt(L) and the blocks' Adam rates by 1/sqrt(L) (CompleteP's table 1, alpha 1 and 1/2)
    c = tiny(n_layer=4, depth_parametrization=kind, base_depth=1)
    torch.manual_seed(0)
    model = GPT(c)
    block = model.blocks[2]
    x = torch.randn(2, 8, c.n_embd)
    with torch.no_grad():
        h = x + branch * block.attn(block.ln_1(x))
        torch.testing.assert_close(block(x), h + branch * block.mlp(block.ln_2(h)))
    # GPT-2's residual init at the base depth (0.02 / sqrt(2 x 1)), not at 4 layers
    assert model.blocks[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 2 ** 0.5, rel=0.05)
    optimizer = make_optimizer(model, c)
    set_lr(optimizer, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            in_block = name.startswith("blocks.")
            assert group["lr"] == pytest.approx(1e-3 * rate if in_block else 1e-3), name
            if in_block and p.dim() == 2:  # lr x decay as at the base depth
                assert group["lr"] * group["weight_decay"] == pytest.approx(1e-3 * c.weight_decay), name


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
