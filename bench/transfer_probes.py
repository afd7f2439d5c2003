#!/usr/bin/env python
"""Why muP tuned at 64 wide loses to sp tuned at 512 wide: each of muP's width rules undone on
its own at the target width, one run each (issue 31's hypotheses), through the library's loop.

    python bench/transfer_probes.py                      every probe at 512 wide (about 15 minutes on the Xeon, 35 on AVX2)
    python bench/transfer_probes.py --probes mup no_clip --widths 64 512 --seeds 1337 1338

A probe is the muP run (bench/transfer.py's model, base width 64, rate and output multiplier as
given) with one thing changed. Some change a setting (weight decay, clipping, Adam's epsilon);
the others replace one of the library's muP rules for this process only (the hidden matrices'
rate or init, the attention scale, the embeddings' rate), which is what a diagnosis needs and a
library setting would not be worth before it is shown to matter. `sp` is the standard model at
its own rate (--sp-lr). Writes OUTPUT/transfer_probes.json (the rows, each with the CPU it ran on:
a rerun replaces a row of the same probe, settings and machine) and prints each run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer import BASE, best_bpb  # noqa: E402  (bench/transfer.py: the same model, data and schedule)
from slm_tune.tune.study_record import machine_info  # noqa: E402


@contextlib.contextmanager
def patched(module, name: str, value) -> Iterator[None]:
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def _optimizer_patch(edit: Callable) -> contextlib.AbstractContextManager:
    """make_optimizer as the loop calls it, then `edit(optimizer, config)`."""
    from slm_tune.train import loop, optimizer

    def make(model, c):
        opt = optimizer.make_optimizer(model, c)
        edit(opt, c)
        return opt

    return patched(loop, "make_optimizer", make)


def _embedding_rate(factor: float):
    """The embeddings' (and the tied head's) rate x factor: the matrices outside the blocks. Set
    per parameter (optimizer.param_settings), since the optimizer's groups are by setting: at muP's
    base width every matrix shares one group with the embeddings."""
    from slm_tune.train import optimizer

    base = optimizer.param_settings

    def settings(c, matrix, in_block, fan_in_mult=1.0):
        rate, decay, eps = base(c, matrix, in_block, fan_in_mult)
        return (rate * factor, decay, eps) if matrix and not in_block else (rate, decay, eps)

    return patched(optimizer, "param_settings", settings)


def _eps(eps: float):
    def edit(opt, c):
        for group in opt.param_groups:
            group["eps"] = eps
    return _optimizer_patch(edit)


def _hidden_rate(factor: float):
    """The blocks' matrices' rate x factor, their decay / factor (lr x decay kept)."""
    from slm_tune.train import optimizer

    base = optimizer.param_settings

    def settings(c, matrix, in_block, fan_in_mult=1.0):
        rate, decay, eps = base(c, matrix, in_block, fan_in_mult)
        return (rate * factor, decay / factor, eps) if matrix and in_block else (rate, decay, eps)

    return patched(optimizer, "param_settings", settings)


def _sp_attention():
    from slm_tune import config

    return patched(config.ExperimentConfig, "attention_scale", property(lambda self: None))


def _init_scale(hidden: Callable[[float], float] = lambda m: 1.0, embedding: float = 1.0):
    """Hidden matrices' init multiplied by hidden(their fan-in ratio), the embeddings' by `embedding`."""
    from slm_tune.model import gpt
    from slm_tune.train import loop

    class ScaledInitGPT(gpt.GPT):
        def __init__(self, c):
            super().__init__(c)
            import torch
            with torch.no_grad():
                for p, fan_in_mult in gpt.hidden_matrices(self):
                    p.mul_(hidden(fan_in_mult))
                for emb in (self.wte, self.wpe):
                    if emb is not None:
                        emb.weight.mul_(embedding)

    return patched(loop, "GPT", ScaledInitGPT)


def _zero_readout():
    """The untied output layer initialised at zero, as the `mup` package's examples do (MuReadout's
    readout_zero_init): the logits start at 0 whatever the width."""
    from slm_tune.model import gpt
    from slm_tune.train import loop

    class ZeroReadoutGPT(gpt.GPT):
        def __init__(self, c):
            super().__init__(c)
            import torch
            with torch.no_grad():
                self.lm_head.weight.zero_()

    return patched(loop, "GPT", ZeroReadoutGPT)


def _input_mult(k: float):
    """The embeddings' output (token and position) x k at every width (Tensor Programs V's input
    multiplier, tuned at the base width): a forward multiplier, so it scales the embeddings' init
    and, under Adam, their effective rate on the input side, but not the tied head's weights."""
    from slm_tune.model import gpt
    from slm_tune.train import loop

    class InputMultGPT(gpt.GPT):
        def __init__(self, c):
            super().__init__(c)
            for emb in (self.wte, self.wpe):
                if emb is not None:
                    emb.register_forward_hook(lambda module, args, out: out * k)

    return patched(loop, "GPT", InputMultGPT)


@contextlib.contextmanager
def _together(*patches: Callable) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch())
        yield


# name: (what it is, config overrides, patch factory or None)
PROBES: dict[str, tuple[str, dict, Callable | None]] = {
    "mup": ("muP as the library has it", {}, None),
    "no_decay": ("weight decay 0 (muP keeps lr x decay per matrix at the base's)", {"weight_decay": 0.0}, None),
    "no_clip": ("no gradient clipping", {"grad_clip": 0.0}, None),
    "eps_1e-12": ("Adam's epsilon 1e-12 instead of 1e-8", {}, lambda: _eps(1e-12)),
    "attn_sqrt": ("attention 1/sqrt(head size) as sp, not 1/head size", {}, _sp_attention),
    "hidden_init_sp": ("hidden init std 0.02 at every width, as sp", {}, lambda: _init_scale(lambda m: m ** 0.5)),
    **{f"hidden_init_x{k:g}": (f"hidden init x{k:g} at every width (muP's 1/sqrt(width) kept)", {},
                               lambda k=k: _init_scale(lambda m: k)) for k in (1.41, 2, 2.83, 4, 8)},
    **{f"embed_init_x{k:g}": (f"embeddings' init x{k:g}", {}, lambda k=k: _init_scale(embedding=k)) for k in (0.25, 4)},
    "hidden_lr_x2": ("hidden matrices' rate x2 (base/width x 2)", {}, lambda: _hidden_rate(2.0)),
    "hidden_lr_x4": ("hidden matrices' rate x4", {}, lambda: _hidden_rate(4.0)),
    "embed_lr_x0.25": ("embeddings' (and tied head's) rate x1/4", {}, lambda: _embedding_rate(0.25)),
    "embed_lr_x0.5": ("embeddings' (and tied head's) rate x1/2", {}, lambda: _embedding_rate(0.5)),
    "all_three": ("hidden init x2, attention 1/sqrt(head size) and hidden rate x2 together", {},
                  lambda: _together(lambda: _init_scale(lambda m: 2.0), _sp_attention, lambda: _hidden_rate(2.0))),
    **{f"attn_mult_x{k:g}": (f"attention scores' scale x{k:g} at every width (mup_attn_mult)", {"mup_attn_mult": k},
                             None) for k in (0.5, 2, 4, 8, 16)},
    **{f"input_mult_x{k:g}": (f"embeddings' output x{k:g} at every width (input multiplier)", {},
                              lambda k=k: _input_mult(k)) for k in (0.25, 0.5, 2, 4)},
    "untied": ("an untied output layer (GPT-2's init)", {"tie_embeddings": False}, None),
    "untied_zero": ("an untied output layer initialised at zero (mup's readout_zero_init)",
                    {"tie_embeddings": False}, _zero_readout),
    "sp": ("the standard model at --sp-lr", {"parametrization": "sp"}, None),
}


def run_probe(name: str, width: int, seed: int, lr: float, mult: float, init: float, iters: int, threads: int,
              data) -> dict:
    from slm_tune.config import ExperimentConfig
    from slm_tune.train import train

    what, overrides, patch = PROBES[name]
    settings = dict(n_embd=width, seed=seed, parametrization="mup", learning_rate=lr, mup_output_mult=mult,
                    hidden_init_std=init)
    c = ExperimentConfig(name="probe", **BASE, max_iters=iters, eval_interval=iters).replace(**{**settings, **overrides})
    t = time.perf_counter()
    with patch() if patch else contextlib.nullcontext():
        result = train(c, data, threads=threads)
    bpb = best_bpb(result)
    return {"probe": name, "what": what, "machine": machine_info()["cpu"], "width": width, "seed": seed, "lr": c.learning_rate,
            "mup_output_mult": mult, "hidden_init_std": init, "iters": iters, "best_val_bpb": bpb, "seconds": time.perf_counter() - t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--widths", nargs="+", type=int, default=[512])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1337])
    parser.add_argument("--lr", type=float, default=7.8125e-3, help="muP's rate (tuned at 64 wide)")
    parser.add_argument("--mult", type=float, default=4.0, help="muP's output multiplier (tuned at 64 wide)")
    parser.add_argument("--init", type=float, default=0.02, help="muP's hidden_init_std (tuned at 64 wide)")
    parser.add_argument("--sp-lr", type=float, default=1.953125e-3, help="sp's rate (tuned at 512 wide)")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "transfer_probes.json")
    args = parser.parse_args()
    from slm_tune.data.cache import prepare_tokens

    data = prepare_tokens(BASE["dataset"], BASE["vocab_size"])
    rows = json.loads(args.output.read_text())["rows"] if args.output.exists() else []
    for name in args.probes:
        for width in args.widths:
            for seed in args.seeds:
                lr, mult, init = (args.sp_lr, 1.0, 0.02) if name == "sp" else (args.lr, args.mult, args.init)
                row = run_probe(name, width, seed, lr, mult, init, args.iters, args.threads, data)
                key = ("probe", "machine", "width", "seed", "lr", "mup_output_mult", "hidden_init_std", "iters")
                rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row[k] for k in key)] + [row]
                args.output.write_text(json.dumps({"rows": rows}, indent=1))
                print(f"{name:<15} width {width:>4} seed {seed} lr {lr:.2e} mult {mult:g} init {init:g} iters {args.iters}: "
                      f"{row['best_val_bpb']:.4f} bits/byte ({row['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
