"""The export's README.md: a Hugging Face model card (YAML front matter, then what the model is,
what it was trained on and how well it does, every setting, and a sample of its text)."""

from __future__ import annotations

from typing import Any

from slm_tune.config import ExperimentConfig
from slm_tune.describe import blocks_text, short_number
from slm_tune.model.counts import param_counts

SKIP = ("name", "description")


def _metric(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "not recorded"


def model_card(c: ExperimentConfig, hf_class: str, facts: dict[str, Any], sample: str) -> str:
    """`facts`: study, iteration, val_loss, val_bpb, entropy_bpb, tokens_seen (what is known)."""
    total, non_embedding = param_counts(c)
    entropy = facts.get("entropy_bpb")
    floor = f" (the corpus's entropy is {entropy:.4f} bits per byte: the floor)" if entropy else ""
    settings = "\n".join(f"| {k} | {v} |" for k, v in c.to_dict().items() if k not in SKIP)
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [slm-tune, {hf_class}, small-language-model]
---

# {c.name}

{c.description or "A small GPT language model"}. Trained with slm-tune (hyperparameter studies of
small GPT models on Ray Tune) and exported as transformers' `{hf_class}`: no custom code.

- **Architecture**: {c.n_layer} layers, {c.n_embd} wide, {c.n_head} query / {c.kv_heads} key-value heads,
  MLP {c.mlp_width} ({c.mlp}), blocks `{blocks_text(c)}`, head {'tied to' if c.tie_embeddings else 'separate from'}
  the token embedding, context {c.block_size} tokens, parametrization {c.parametrization}
- **Parameters**: {total:,} ({short_number(total)}); {non_embedding:,} outside the embeddings
- **Vocabulary**: {c.vocab_size:,} tokens: GPT-2's first {c.vocab_size - 1:,} BPE ranks and `<|endoftext|>` at id {c.vocab_size - 1}
- **Data**: `{c.dataset}` ({c.data_fraction:.0%} of its training split), {short_number(facts.get('tokens_seen') or 0)} tokens seen
  over {facts.get('iteration', 'an unknown number of')} iterations
- **Validation**: loss {_metric(facts.get('val_loss'))} nats per token, {_metric(facts.get('val_bpb'))} bits per byte{floor}
- **Study**: `{facts.get('study') or 'not recorded'}`, experiment `{c.name}`

```python
from transformers import pipeline
generate = pipeline("text-generation", model="PATH_OR_REPO")
print(generate("Once upon a time", max_new_tokens=60)[0]["generated_text"])
```

## A sample (temperature 0.8, top-k 50)

> {sample.replace(chr(10), chr(10) + '> ')}

## Every setting

| setting | value |
|---|---|
{settings}
"""
