"""Generation with the key/value cache against generation without it (every step recomputing the
whole context, the reference): the same greedy tokens and the same logits, for every design."""

import pytest
import torch

from conftest import tiny
from slm_tune.model.gpt import GPT

DESIGNS = {
    "gpt2": {},
    "llama_gqa": dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, n_head=4, n_kv_head=2, qk_norm=True,
                      tie_embeddings=False),
    "mup": dict(parametrization="mup", mup_base_width=16, mup_output_mult=2.0, mup_attn_mult=3.0),
}


def _model(design: str) -> GPT:
    c = tiny(n_embd=64, n_layer=2, block_size=256, **{"n_head": 2, **DESIGNS[design]})
    torch.manual_seed(0)
    model = GPT(c).eval()
    with torch.no_grad():  # weights far from init, so that greedy choices are not near-ties
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    return model


@pytest.mark.parametrize("design", DESIGNS)
def test_cached_generation_equals_recomputing_the_context(design):
    model = _model(design)
    prompt = torch.randint(0, model.config.vocab_size, (2, model.config.block_size // 2))
    cached = model.generate(prompt, 200, temperature=0)  # 128 + 200: slides past block_size for the last 72
    plain = model.generate(prompt, 200, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)
    assert len(set(cached[0, 128:].tolist())) > 10  # not one token repeated
    cache = None
    for t in range(prompt.shape[1], cached.shape[1] + 1):  # every step's logits, cached against not
        logits, cache = model.next_logits(cached[:, :t], cache)
        torch.testing.assert_close(logits, model.logits(cached[:, :t]), atol=1e-5, rtol=0)
        assert (cache is None) == (t > model.config.block_size)


def test_sampling_with_the_cache_draws_the_same_tokens():
    model = _model("gpt2")
    prompt = torch.tensor([[1, 2, 3]])
    draws = [model.generate(prompt, 40, generator=torch.Generator().manual_seed(5), use_cache=use)
             for use in (True, False)]
    assert torch.equal(*draws)
