"""A best_model file -> a folder transformers loads with no custom code: model.safetensors,
config.json, generation_config.json, tokenizer.json (+ its config) and a model card README.md.

The export is checked before it is written: the transformers model's logits must match
slm-tune's on a random batch (float32, at most MAX_LOGIT_DIFF apart), or nothing is written."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_tune.errors import UserError

MAX_LOGIT_DIFF = 1e-4
EXPORT_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class Exported:
    path: Path
    hf_class: str
    max_logit_diff: float


def require_hf() -> None:
    import importlib

    try:
        for module in ("safetensors", "tokenizers", "transformers"):
            importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"export needs the hf extra ({e.name} is not installed): pip install -e .[hf]") from None


def build_hf_model(c, state: dict[str, Any]):
    """transformers' own class for `c`, holding the model's weights (every tensor accounted for)."""
    import transformers

    from slm_tune.hf.mapping import hf_config, hf_state_dict, target_class

    name = target_class(c)
    config_class = {"GPT2LMHeadModel": transformers.GPT2Config, "LlamaForCausalLM": transformers.LlamaConfig}[name]
    model = getattr(transformers, name)(config_class(**hf_config(c, c.vocab_size - 1)))
    model.load_state_dict(hf_state_dict(c, state), strict=True)
    return model.eval()


def logit_difference(model, hf_model, c, batches: int = 2) -> float:
    """The largest |logit| difference over random token batches, every position, float32."""
    import torch

    g = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for _ in range(batches):
            idx = torch.randint(0, c.vocab_size, (2, c.block_size), generator=g)
            ours = model.output(model.hidden(idx))
            theirs = hf_model(idx).logits
            worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def _generation_config(c):
    from transformers import GenerationConfig

    eot = c.vocab_size - 1
    return GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=True, temperature=0.8,
                            top_k=50, max_length=c.block_size)


def _target(to: Path) -> Path:
    """The export folder, refusing to write over a folder that is not an export."""
    if to.exists() and any(to.iterdir()) and not (to / "config.json").is_file():
        raise UserError(f"{to} exists and is not an export (no config.json); choose another with --to")
    return to


def export_model(best_model: Path, to: Path, facts: dict[str, Any] | None = None) -> Exported:
    """Write the export of `best_model` into `to`; `facts` (study, results) fill the model card."""
    require_hf()
    from slm_tune.hf.card import model_card
    from slm_tune.hf.mapping import target_class
    from slm_tune.hf.tokenizer import hf_tokenizer
    from slm_tune.model.generation import generate_text, load_model

    model, c, saved = load_model(best_model)
    hf_class = target_class(c)
    hf_model = build_hf_model(c, saved["model"])
    diff = logit_difference(model, hf_model, c)
    if diff > MAX_LOGIT_DIFF:
        raise UserError(f"export of {best_model} refused: transformers' {hf_class} computes logits up to {diff:.2g} "
                        f"away from the model's (more than {MAX_LOGIT_DIFF:g}); please report this")
    hf_model.generation_config = _generation_config(c)
    to = _target(Path(to))
    partial = to.with_name(to.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    hf_model.save_pretrained(partial, safe_serialization=True)
    hf_tokenizer(c.vocab_size).save_pretrained(partial)
    facts = {**_facts(saved), **(facts or {})}
    sample = generate_text(model, c.vocab_size, seed=0)
    (partial / "README.md").write_text(model_card(c, hf_class, facts, sample), encoding="utf-8")
    shutil.rmtree(to, ignore_errors=True)
    partial.rename(to)
    return Exported(to, hf_class, diff)


def _facts(saved: dict[str, Any]) -> dict[str, Any]:
    """What the best_model file itself records: its iteration, losses, and the study its checkpoint is in."""
    c = saved["config"]
    iteration = saved.get("iteration")
    checkpoint = Path(str(saved.get("checkpoint", "")))
    return {"iteration": iteration, "val_loss": saved.get("val_loss"), "val_bpb": saved.get("val_bpb"),
            "tokens_seen": iteration * c["batch_size"] * c["block_size"] if iteration else None,
            "study": checkpoint.parent.parent.name if saved.get("checkpoint") else None}
