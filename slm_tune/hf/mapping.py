"""slm-tune's model as a standard transformers class: which class computes it exactly, its config,
and the weights renamed, split and (for GPT-2's Conv1D layers) transposed.

- GPT-2-style settings (layernorm, learned positions, gelu) -> GPT2LMHeadModel. GELU is the exact
  erf form, transformers' "gelu"; a model without biases gets zero biases.
- Llama-style settings (rmsnorm, rope, swiglu) -> LlamaForCausalLM, any number of key/value heads,
  tied or untied, with or without biases (attention_bias, mlp_bias). slm-tune's rope rotates the
  two halves of each head as transformers' Llama does, so q and k need no permutation.
- muP's multipliers are folded into the weights: the attention scale into the query projection
  (rope is linear, so scaling q before it is the same), the output multiplier into the final norm.

Anything else (rope with layernorm, qk_norm, ...) is refused with the setting that blocks it:
an export never computes other logits than the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from slm_tune.config import ExperimentConfig
from slm_tune.errors import UserError
from slm_tune.model.gpt import NORM_EPS

GPT2_NEEDS = {"norm": "layernorm", "mlp": "gelu", "qk_norm": False}
LLAMA_NEEDS = {"norm": "rmsnorm", "mlp": "swiglu", "qk_norm": False}


def target_class(c: ExperimentConfig) -> str:
    """GPT2LMHeadModel or LlamaForCausalLM, or a UserError naming what no standard class computes."""
    family, needs = ("GPT2LMHeadModel", GPT2_NEEDS) if c.pos == "learned" else ("LlamaForCausalLM", LLAMA_NEEDS)
    for key, value in needs.items():
        if getattr(c, key) != value:
            raise UserError(
                f"cannot export {c.name!r}: pos={c.pos} exports as {family}, which needs {key}={_text(value)} "
                f"(this model has {key}={_text(getattr(c, key))}); no standard transformers class computes "
                "this combination exactly")
    if family == "GPT2LMHeadModel" and c.kv_heads != c.n_head:
        raise UserError(f"cannot export {c.name!r}: GPT-2 has no grouped-query attention (n_kv_head={c.n_kv_head}); "
                        "Llama-style settings (norm=rmsnorm, pos=rope, mlp=swiglu) export with it")
    return family


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def hf_config(c: ExperimentConfig, eot: int) -> dict[str, Any]:
    """The arguments of the config class (GPT2Config, LlamaConfig) for target_class(c)."""
    common = {"vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_embeddings, "bos_token_id": eot,
              "eos_token_id": eot}
    if target_class(c) == "GPT2LMHeadModel":
        return {"n_embd": c.n_embd, "n_layer": c.n_layer,
                "n_head": c.n_head, "n_positions": c.block_size, "n_inner": c.mlp_width, "activation_function": "gelu",
                "layer_norm_epsilon": NORM_EPS, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                "scale_attn_weights": True, **common}
    return {"hidden_size": c.n_embd,
            "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads,
            "head_dim": c.head_size, "intermediate_size": c.mlp_width, "hidden_act": "silu",
            "max_position_embeddings": c.block_size, "rms_norm_eps": NORM_EPS,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
            "attention_bias": c.bias, "mlp_bias": c.bias, "attention_dropout": 0.0, **common}


def _query_gain(c: ExperimentConfig) -> float:
    """muP's attention scale over the class's 1/sqrt(head_size), folded into the queries."""
    return 1.0 if c.attention_scale is None else c.attention_scale * math.sqrt(c.head_size)


def hf_state_dict(c: ExperimentConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """slm-tune's weights under the target class's names, as contiguous float32 tensors."""
    state = {k: v.detach().float() for k, v in state.items()}
    out = _gpt2_weights(c, state) if target_class(c) == "GPT2LMHeadModel" else _llama_weights(c, state)
    return {k: v.contiguous().clone() for k, v in out.items()}


def _bias(state: dict[str, torch.Tensor], name: str, size: int) -> torch.Tensor:
    return state.get(name, torch.zeros(size))


def _final_norm(c: ExperimentConfig, state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """ln_f with muP's output multiplier folded in (it scales the hidden states the head reads)."""
    mult = c.output_multiplier
    out = {f"{prefix}.weight": state["ln_f.weight"] * mult}
    if c.norm == "layernorm":
        out[f"{prefix}.bias"] = _bias(state, "ln_f.bias", c.n_embd) * mult
    return out


def _gpt2_weights(c: ExperimentConfig, s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    C, H = c.n_embd, c.mlp_width
    out = {"transformer.wte.weight": s["wte.weight"], "transformer.wpe.weight": s["wpe.weight"],
           **_final_norm(c, s, "transformer.ln_f")}
    gain = torch.ones(3 * C)
    gain[:C] = _query_gain(c)
    branch = c.branch_multiplier  # a depth parametrization's branch scale, folded into each branch's last layer
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        for name in ("ln_1", "ln_2"):
            out[f"{dst}{name}.weight"] = s[f"{src}{name}.weight"]
            out[f"{dst}{name}.bias"] = _bias(s, f"{src}{name}.bias", C)
        out[f"{dst}attn.c_attn.weight"] = (s[f"{src}attn.c_attn.weight"] * gain[:, None]).T  # Conv1D: (in, out)
        out[f"{dst}attn.c_attn.bias"] = _bias(s, f"{src}attn.c_attn.bias", 3 * C) * gain
        out[f"{dst}attn.c_proj.weight"] = s[f"{src}attn.c_proj.weight"].T * branch
        out[f"{dst}attn.c_proj.bias"] = _bias(s, f"{src}attn.c_proj.bias", C) * branch
        out[f"{dst}mlp.c_fc.weight"] = s[f"{src}mlp.c_fc.weight"].T
        out[f"{dst}mlp.c_fc.bias"] = _bias(s, f"{src}mlp.c_fc.bias", H)
        out[f"{dst}mlp.c_proj.weight"] = s[f"{src}mlp.c_proj.weight"].T * branch
        out[f"{dst}mlp.c_proj.bias"] = _bias(s, f"{src}mlp.c_proj.bias", C) * branch
    out["lm_head.weight"] = s["wte.weight"] if c.tie_embeddings else s["lm_head.weight"]
    return out


def _llama_weights(c: ExperimentConfig, s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    C, H, kv = c.n_embd, c.mlp_width, c.kv_heads * c.head_size
    out = {"model.embed_tokens.weight": s["wte.weight"], **_final_norm(c, s, "model.norm")}
    gain, branch = _query_gain(c), c.branch_multiplier
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        out[f"{dst}input_layernorm.weight"] = s[f"{src}ln_1.weight"]
        out[f"{dst}post_attention_layernorm.weight"] = s[f"{src}ln_2.weight"]
        parts = {"q_proj": (0, C, gain), "k_proj": (C, C + kv, 1.0), "v_proj": (C + kv, C + 2 * kv, 1.0)}
        for name, (a, b, g) in parts.items():
            out[f"{dst}self_attn.{name}.weight"] = s[f"{src}attn.c_attn.weight"][a:b] * g
            if c.bias:
                out[f"{dst}self_attn.{name}.bias"] = s[f"{src}attn.c_attn.bias"][a:b] * g
        mlp = {"gate_proj": s[f"{src}mlp.c_fc.weight"][:H], "up_proj": s[f"{src}mlp.c_fc.weight"][H:],
               "down_proj": s[f"{src}mlp.c_proj.weight"] * branch}
        out.update({f"{dst}mlp.{k}.weight": v for k, v in mlp.items()})
        out[f"{dst}self_attn.o_proj.weight"] = s[f"{src}attn.c_proj.weight"] * branch
        if c.bias:
            out[f"{dst}self_attn.o_proj.bias"] = s[f"{src}attn.c_proj.bias"] * branch
            out[f"{dst}mlp.gate_proj.bias"] = s[f"{src}mlp.c_fc.bias"][:H]
            out[f"{dst}mlp.up_proj.bias"] = s[f"{src}mlp.c_fc.bias"][H:]
            out[f"{dst}mlp.down_proj.bias"] = s[f"{src}mlp.c_proj.bias"] * branch
    out["lm_head.weight"] = s["wte.weight"] if c.tie_embeddings else s["lm_head.weight"]
    return out
