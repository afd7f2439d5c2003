"""Text views of experiments for the CLI: the `list` table and the `details` page."""

from __future__ import annotations

from typing import Mapping

from slm_tune.config import ExperimentConfig


def short_number(n: float) -> str:
    """16058112 -> '16.1M'; 1997640546263040 -> '2.0P'."""
    for unit, size in (("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:g}"


def flops_text(n: float) -> str:
    """480335000000000 -> '480.3 TFLOP'."""
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}FLOP"
    return f"{n:,.0f} FLOP"


def experiments_table(registry: Mapping[str, ExperimentConfig]) -> str:
    """One row per experiment: name, parameters and the settings that tell them apart."""
    from slm_tune.model.counts import param_counts

    head = ["name", "params", "vocab", "embd", "layers", "heads", "blocks", "lr", "iters", "data", "description"]
    rows = [head]
    for c in registry.values():
        total, _ = param_counts(c)
        rows.append([c.name, short_number(total), f"{c.vocab_size:,}", str(c.n_embd), str(c.n_layer),
                     heads_text(c), blocks_text(c), f"{c.learning_rate:g}", str(c.max_iters),
                     f"{c.data_fraction:.0%}", c.description])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = []
    for r in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)


def heads_text(c: ExperimentConfig) -> str:
    """4, or 4/2 for four query heads sharing two key/value heads."""
    return str(c.n_head) if c.kv_heads == c.n_head else f"{c.n_head}/{c.kv_heads}"


def blocks_text(c: ExperimentConfig) -> str:
    """The block design in a few letters: gpt2, or what differs (rms, rope, swiglu, untied, nobias, qknorm)."""
    parts = [label for on, label in ((c.norm == "rmsnorm", "rms"), (c.pos == "rope", "rope"),
                                     (c.mlp == "swiglu", "swiglu"), (not c.tie_embeddings, "untied"),
                                     (not c.bias, "nobias"), (c.qk_norm, "qknorm")) if on]
    return "+".join(parts) or "gpt2"


def experiment_details(c: ExperimentConfig) -> str:
    """Every setting, the parameter counts and the estimated training FLOPs per token."""
    from slm_tune.model.counts import flops_per_token, param_counts

    total, non_embedding = param_counts(c)
    fpt = flops_per_token(c)
    tokens = c.max_iters * c.batch_size * c.block_size
    width = max(len(k) for k in [*c.to_dict(), "FLOPs per token"])
    lines = [f"{c.name}: {c.description}", ""]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in c.to_dict().items() if k not in ("name", "description")]
    lines += [
        "",
        f"  {'total params'.ljust(width)}  {total:,} ({short_number(total)}, output head "
        f"{'tied to the embedding' if c.tie_embeddings else 'untied'})",
        f"  {'heads'.ljust(width)}  {c.n_head} query, {c.kv_heads} key/value, {c.head_size} wide",
        f"  {'mlp hidden'.ljust(width)}  {c.mlp_width:,} ({c.mlp})",
        f"  {'non-embedding'.ljust(width)}  {non_embedding:,} ({short_number(non_embedding)})",
        f"  {'FLOPs per token'.ljust(width)}  {fpt:,} ({short_number(fpt)}, forward + backward)",
        f"  {'training tokens'.ljust(width)}  {tokens:,} ({short_number(tokens)})",
        f"  {'training FLOPs'.ljust(width)}  {flops_text(fpt * tokens)} ({fpt * tokens:.3g})",
    ]
    return "\n".join(lines)
