"""Named experiments: one frozen dataclass and the registry of the seed's 14 experiments and the block designs.

`ExperimentConfig` is the single source of truth for every setting a run uses. It validates itself
on construction, so a bad value from code, an experiments file or `--set` fails the same way, with
a message naming the field, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from slm_tune.errors import UserError, closest

GPT2_VOCAB_SIZE = 50_257  # 50,256 BPE ranks + <|endoftext|>
MIN_VOCAB_SIZE = 257  # the 256 byte tokens + <|endoftext|>: the smallest lossless vocabulary
PRECISIONS = ("auto", "float32", "bfloat16")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
MLPS = ("gelu", "swiglu")
PARAMETRIZATIONS = ("sp", "mup")
# depth_parametrization: how residual branches and the optimizer follow depth (docs/mup.md, "Depth"):
# none is GPT-2's; completep is Dey et al. 2025's table 1 at alpha 1 (each branch x base_depth/n_layer),
# depth_mup the same table at alpha 1/2 (branches x its square root, the blocks' Adam rates too: Yang
# et al. 2023's Depth-muP), as EleutherAI's nanoGPT-mup completep branch applies it (depth_alpha_exp)
DEPTH_ALPHA = {"none": 0.0, "completep": 1.0, "depth_mup": 0.5}
SWIGLU_MULTIPLE = 64  # swiglu's default hidden size: 8/3 x n_embd rounded up to a multiple of this
# The settings that shape the model: a trial continuing from another trial's weights (PBT's
# exploit) must keep every one of them (slm_tune/space.py keeps them out of PBT's mutations).
ARCHITECTURE = ("vocab_size", "n_embd", "n_layer", "n_head", "block_size", "norm", "pos", "rope_theta", "mlp",
                "mlp_hidden", "n_kv_head", "tie_embeddings", "bias", "qk_norm", "parametrization", "mup_base_width",
                "mup_base_head_size", "depth_parametrization", "base_depth")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a run. Each field's meaning is the comment beside it, or the comment lines
    directly above it; a comment after a blank line heads a group (the docs' settings reference is
    generated from these comments, the defaults and _validate's rules: docs/hooks.py)."""

    name: str = "baseline"  # the experiment's name: its results files and trials are named after it
    description: str = ""  # what it is, in one line (`list`, the results, the model card)

    # model
    vocab_size: int = GPT2_VOCAB_SIZE  # tokens: GPT-2's BPE truncated to its first merges (lossless)
    n_embd: int = 256  # the embedding width (of the residual stream)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention (query) heads; head size n_embd / n_head
    block_size: int = 128  # the context window in tokens, for training and evaluation
    dropout: float = 0.0  # dropout in attention, after each residual branch and after the embeddings

    # block design (the defaults are GPT-2's; docs/architectures.md)
    norm: str = "layernorm"  # layernorm | rmsnorm, for every norm (RMSNorm has no bias)
    # learned position embeddings | rope: rotary positions on queries and keys (the rotate-half layout of
    # transformers' Llama)
    pos: str = "learned"
    rope_theta: float = 10_000.0  # rope's base wavelength
    mlp: str = "gelu"  # gelu | swiglu (a gated MLP: silu(x W_gate) * x W_up, then W_down)
    # the MLP's hidden size; 0: 4 x n_embd for gelu, 8/3 x n_embd rounded up to a multiple of 64 for swiglu
    # (704 at 256 wide; under muP only 0 follows the width: a fixed size is refused away from mup_base_width)
    mlp_hidden: int = 0
    n_kv_head: int = 0  # key/value heads (grouped-query attention; 1 is multi-query); 0: n_head
    tie_embeddings: bool = True  # the output head is the token embedding (untied: a second vocab x n_embd matrix)
    bias: bool = True  # biases in every linear layer and layer norm
    qk_norm: bool = False  # normalise each head's queries and keys (with `norm`) before the scores

    # parametrization (docs/mup.md)
    parametrization: str = "sp"  # sp (standard) | mup: makes the best learning rate independent of width
    mup_base_width: int = 256  # the width at which mup and sp are the same model and optimizer
    mup_base_head_size: int = 0  # the head size at the base width; 0: mup_base_width / n_head
    mup_output_mult: float = 1.0  # muP's logit multiplier at the base width (tunable at the proxy width)
    # muP's attention multiplier: the scores' scale is mup_attn_mult / sqrt(head size) at the base head
    # size, falling as 1/head size from there (Tensor Programs V's attention temperature; tunable at the proxy)
    mup_attn_mult: float = 1.0
    # the blocks' weight matrices' init std (GPT-2's 0.02; residual projections 1/sqrt(2 n_layer) of it);
    # under muP the std at the base width, scaled by sqrt(base/width) (tunable at the proxy width)
    hidden_init_std: float = 0.02
    depth_parametrization: str = "none"  # none | completep | depth_mup (DEPTH_ALPHA)
    base_depth: int = 0  # the depth at which a depth parametrization is the standard model (required with one)

    # optimisation (AdamW)
    batch_size: int = 32  # sequences of block_size tokens per iteration
    learning_rate: float = 1e-4  # the peak rate, reached after warmup_iters
    min_lr_ratio: float = 0.1  # cosine decay ends at learning_rate * min_lr_ratio
    warmup_iters: int = 100  # iterations of linear warmup, then cosine decay to max_iters
    max_iters: int = 1200  # training iterations; baseline: one pass over storyworld's 4.9M training tokens
    weight_decay: float = 0.1  # AdamW's decoupled weight decay
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.95  # AdamW's second-moment decay
    grad_clip: float = 1.0  # 0 turns clipping off

    # evaluation
    eval_interval: int = 100  # iterations between evals (each reports, with a checkpoint)
    eval_iters: int = 16  # batches per eval, the same fixed windows for every run
    log_interval: int = 10  # iterations between training-loss reports (no checkpoint); 0: evals only

    # data
    dataset: str = "storyworld"  # storyworld | tinystories | hf:owner/name | a local path (docs/datasets.md)
    data_fraction: float = 1.0  # a deterministic share of the training split; validation never changes

    # run
    seed: int = 1337  # model init and batch order; --repeats runs seed, seed+1, ...
    precision: str = "auto"  # auto: bfloat16 autocast where the CPU has native bf16, else float32
    # torch.compile the model: auto where the run is long enough for it to pay (slm_tune/model/compiling.py),
    # true always, false never; eager wherever compiling fails
    compile: str = "auto"
    fused_loss: bool = True  # chunked output layer + cross-entropy (slm_tune/model/losses.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compile", _compile_mode(self.compile))
        _validate(self)

    @property
    def min_lr(self) -> float:
        return self.learning_rate * self.min_lr_ratio

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head (multi-head attention) when it is 0."""
        return self.n_kv_head or self.n_head

    @property
    def width_mult(self) -> float:
        """muP's width multiplier n_embd / mup_base_width (1 under sp)."""
        return self.n_embd / self.mup_base_width if self.parametrization == "mup" else 1.0

    @property
    def output_multiplier(self) -> float:
        """What the hidden states the output layer reads are multiplied by: muP's
        mup_output_mult x base/width (1 under sp)."""
        return self.mup_output_mult / self.width_mult if self.parametrization == "mup" else 1.0

    @property
    def depth_mult(self) -> float:
        """n_layer / base_depth under a depth parametrization (1 without one)."""
        return self.n_layer / self.base_depth if self.depth_parametrization != "none" else 1.0

    @property
    def branch_multiplier(self) -> float:
        """What each residual branch's output (attention, MLP) is multiplied by: depth_mult^-alpha."""
        return self.depth_mult ** -DEPTH_ALPHA[self.depth_parametrization] if self.depth_mult != 1.0 else 1.0

    @property
    def depth_lr_scale(self) -> float:
        """The rate of the blocks' parameters over the base depth's: depth_mult^(alpha - 1) for
        Adam (1 under completep, 1/sqrt(depth_mult) under depth_mup)."""
        return self.depth_mult ** (DEPTH_ALPHA[self.depth_parametrization] - 1) if self.depth_mult != 1.0 else 1.0

    @property
    def residual_init_layers(self) -> int:
        """The depth in GPT-2's residual-projection init 0.02/sqrt(2 L): n_layer, or base_depth
        under a depth parametrization (whose branch multiplier then carries the depth)."""
        return self.base_depth if self.depth_parametrization != "none" else self.n_layer

    @property
    def attention_scale(self) -> float | None:
        """The scores' scale: 1/sqrt(head_size) (None: SDPA's default) under sp and at muP's base
        head size; mup_attn_mult x sqrt(base head size) / head_size under muP, so it falls as 1/head_size."""
        base = self.mup_base_head_size or self.mup_base_width // self.n_head
        if self.parametrization != "mup" or (self.head_size == base and self.mup_attn_mult == 1.0):
            return None
        return self.mup_attn_mult * math.sqrt(base) / self.head_size

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden size: mlp_hidden, or the convention of its kind when it is 0."""
        return self._mlp_width_at(self.n_embd)

    def _mlp_width_at(self, n_embd: int) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return -(-8 * n_embd // (3 * SWIGLU_MULTIPLE)) * SWIGLU_MULTIPLE
        return 4 * n_embd

    @property
    def mlp_width_mult(self) -> float:
        """muP's width multiplier of the MLP's hidden size (1 under sp): mlp_width over the base
        model's (the same rule at mup_base_width), the fan-in ratio of the MLP's down-projection.
        Where swiglu's rule rounds it is not width_mult: 1408 / 192 = 7.33 from 64 to 512 wide."""
        return self.mlp_width / self._mlp_width_at(self.mup_base_width) if self.parametrization == "mup" else 1.0

    @classmethod
    def from_name(
        cls, name: str, registry: Mapping[str, "ExperimentConfig"] | None = None, **overrides: Any
    ) -> "ExperimentConfig":
        """The named experiment, with `overrides` applied and validated (litgpt's idiom)."""
        registry = EXPERIMENT_CONFIGS if registry is None else registry
        if name not in registry:
            raise UserError(
                f"unknown experiment {name!r}{closest(name, registry)}; "
                "`python studies.py list` shows them all"
            )
        return registry[name].replace(**overrides)

    def replace(self, **overrides: Any) -> "ExperimentConfig":
        unknown = [k for k in overrides if k not in FIELD_TYPES]
        if unknown:
            raise UserError(
                f"unknown setting {unknown[0]!r}{closest(unknown[0], FIELD_TYPES)}; "
                "`python studies.py details baseline` lists every setting"
            )
        return dataclasses.replace(self, **{k: coerce(k, v) for k, v in overrides.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES: dict[str, type] = {
    f.name: typing.get_type_hints(ExperimentConfig)[f.name] for f in dataclasses.fields(ExperimentConfig)
}


def coerce(key: str, value: Any) -> Any:
    """Turn a value from a file or the command line into the field's type, or say why not."""
    kind = FIELD_TYPES[key]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            text = str(value).strip().replace("_", "").replace(",", "")
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(
            f"{key}={value!r} is not a valid {kind.__name__}; give it as {key}=<{kind.__name__}>"
        ) from None


COMPILE_MODES = ("auto", "true", "false")


def _compile_mode(value: Any) -> Any:
    """compile as one of auto/true/false; booleans (files from before "auto") and yes/no/on/off mean true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    return {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(text, text)


def _validate(c: ExperimentConfig) -> None:
    def rule(ok: bool, key: str, text: str) -> None:
        if not ok:
            raise UserError(f"experiment {c.name!r}: {key}={getattr(c, key)!r} is invalid: {text}")

    for key, kind in FIELD_TYPES.items():
        value = getattr(c, key)
        good = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(c, key, float(value))
            good = True
        rule(good, key, f"must be of type {kind.__name__}")
        if kind is float:
            rule(math.isfinite(getattr(c, key)), key, "must be a finite number")
    rule(bool(c.name.strip()), "name", "must not be empty")
    rule(
        MIN_VOCAB_SIZE <= c.vocab_size <= GPT2_VOCAB_SIZE,
        "vocab_size",
        f"the GPT-2 tokenizer gives {MIN_VOCAB_SIZE:,} to {GPT2_VOCAB_SIZE:,} tokens",
    )
    for key in ("n_embd", "n_layer", "n_head", "block_size", "batch_size", "max_iters",
                "eval_interval", "eval_iters"):
        rule(getattr(c, key) > 0, key, "must be a positive whole number")
    rule(c.n_embd % c.n_head == 0, "n_embd", f"must be divisible by n_head={c.n_head}")
    rule(0 <= c.dropout < 1, "dropout", "must be in [0, 1)")
    _validate_architecture(c, rule)
    rule(c.learning_rate > 0, "learning_rate", "must be positive")
    rule(0 <= c.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
    rule(c.warmup_iters >= 0, "warmup_iters", "must be >= 0")
    rule(c.log_interval >= 0, "log_interval", "must be >= 0 (0 reports at evals only)")
    rule(c.weight_decay >= 0, "weight_decay", "must be >= 0")
    rule(0 <= c.beta1 < 1, "beta1", "must be in [0, 1)")
    rule(0 <= c.beta2 < 1, "beta2", "must be in [0, 1)")
    rule(c.grad_clip >= 0, "grad_clip", "must be >= 0 (0 turns clipping off)")
    rule(bool(c.dataset.strip()), "dataset", "must name a corpus (storyworld, tinystories, a path or hf:owner/name)")
    rule(0 < c.data_fraction <= 1, "data_fraction", "must be in (0, 1]")
    rule(c.seed >= 0, "seed", "must be >= 0")
    rule(c.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
    rule(c.compile in COMPILE_MODES, "compile", f"must be one of {', '.join(COMPILE_MODES)}")


BLOCK_DESIGN = ("norm", "pos", "rope_theta", "mlp", "mlp_hidden", "n_kv_head", "tie_embeddings", "bias", "qk_norm",
                "parametrization", "mup_base_width", "mup_base_head_size", "depth_parametrization", "base_depth")


def block_design(c: ExperimentConfig) -> str:
    """The block settings that differ from GPT-2's, as `norm=rmsnorm,pos=rope`; "gpt2" when none do."""
    default = ExperimentConfig()
    changed = [f"{k}={_text(getattr(c, k))}" for k in BLOCK_DESIGN if getattr(c, k) != getattr(default, k)]
    return ",".join(changed) or "gpt2"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def _validate_architecture(c: ExperimentConfig, rule) -> None:
    rule(c.norm in NORMS, "norm", f"must be one of {', '.join(NORMS)}")
    rule(c.pos in POSITIONS, "pos", f"must be one of {', '.join(POSITIONS)}")
    rule(c.mlp in MLPS, "mlp", f"must be one of {', '.join(MLPS)}")
    rule(c.rope_theta > 0, "rope_theta", "must be positive")
    rule(c.mlp_hidden >= 0, "mlp_hidden", "must be >= 0 (0: the usual size for the mlp)")
    rule(c.n_kv_head >= 0, "n_kv_head", "must be >= 0 (0: as many as n_head)")
    rule(c.n_head % c.kv_heads == 0, "n_kv_head", f"must divide n_head={c.n_head} (1 is multi-query attention)")
    rule(c.parametrization in PARAMETRIZATIONS, "parametrization", f"must be one of {', '.join(PARAMETRIZATIONS)}")
    rule(c.mup_base_width > 0, "mup_base_width", "must be a positive whole number")
    rule(c.mup_base_head_size >= 0, "mup_base_head_size", "must be >= 0 (0: mup_base_width / n_head)")
    rule(c.mup_output_mult > 0, "mup_output_mult", "must be positive")
    rule(c.hidden_init_std > 0, "hidden_init_std", "must be positive (GPT-2's is 0.02)")
    rule(c.mup_output_mult == 1.0 or c.parametrization == "mup", "mup_output_mult",
         "applies under parametrization=mup only; add --set parametrization=mup, or leave it at 1")
    rule(c.parametrization != "mup" or not c.mlp_hidden or c.n_embd == c.mup_base_width, "mlp_hidden",
         f"is a fixed size, but muP scales every hidden matrix with the width (n_embd={c.n_embd}, mup_base_width="
         f"{c.mup_base_width}); leave it at 0 (the mlp's own size, which follows n_embd), or make this width the "
         f"base (--set mup_base_width={c.n_embd})")
    rule(c.parametrization != "mup" or c.mlp_hidden or c.n_embd == c.mup_base_width
         or c.mlp_width != c._mlp_width_at(c.mup_base_width), "n_embd",
         f"gives the {c.mlp} MLP the base width's hidden size ({c.mlp_width}, rounded to a multiple of "
         f"{SWIGLU_MULTIPLE}), so its matrices would not grow with the width as muP needs; pick a width further from "
         f"mup_base_width={c.mup_base_width}")
    rule(c.mup_attn_mult > 0, "mup_attn_mult", "must be positive")
    rule(c.mup_attn_mult == 1.0 or c.parametrization == "mup", "mup_attn_mult",
         "applies under parametrization=mup only; add --set parametrization=mup, or leave it at 1")
    rule(c.depth_parametrization in DEPTH_ALPHA, "depth_parametrization", f"must be one of {', '.join(DEPTH_ALPHA)}")
    if c.depth_parametrization in DEPTH_ALPHA and c.depth_parametrization != "none":
        rule(c.base_depth > 0, "base_depth", "must be set with a depth parametrization: the depth it was tuned at, "
                                             "e.g. --set base_depth=2")
    else:
        rule(c.base_depth == 0, "base_depth", "applies with a depth parametrization only; add --set "
                                              "depth_parametrization=completep, or leave it at 0")
    if c.pos == "rope":
        rule(c.head_size % 2 == 0, "n_head", f"must leave an even head size for rope (n_embd={c.n_embd} / "
                                             f"n_head={c.n_head} = {c.n_embd / c.n_head:g})")


# ---------------------------------------------------------------------------------------------
# The seed's experiments. Each changes only what its name says; everything else is baseline's.

_BASE = ExperimentConfig(
    name="baseline",
    description="Reference point: GPT-2 vocabulary, 256-wide embeddings, 4 layers, 4 heads",
)


LLAMA = {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu", "bias": False}


def _variant(name: str, description: str, **changes: Any) -> ExperimentConfig:
    return dataclasses.replace(_BASE, name=name, description=description, **changes)


EXPERIMENT_CONFIGS: dict[str, ExperimentConfig] = {
    c.name: c
    for c in [
        _BASE,
        _variant("vocab_small", "Reduced vocabulary: 10,000 tokens", vocab_size=10_000),
        _variant("vocab_medium", "Medium vocabulary: 25,000 tokens", vocab_size=25_000),
        _variant("embd_small", "Small embeddings: 128 dimensions", n_embd=128),
        _variant("embd_large", "Large embeddings: 512 dimensions", n_embd=512),
        _variant("embd_xlarge", "Extra large embeddings: 768 dimensions", n_embd=768),
        _variant("arch_deep", "Deeper model: 8 layers", n_layer=8),
        _variant("arch_wide", "Wider attention: 8 heads", n_head=8),
        _variant("data_small", "10% of the training data", data_fraction=0.1),
        _variant("data_medium", "50% of the training data", data_fraction=0.5),
        _variant("lr_high", "Higher learning rate: 5e-4", learning_rate=5e-4),
        _variant("lr_low", "Lower learning rate: 5e-5", learning_rate=5e-5),
        _variant(
            "optimal_small",
            "Same budget, spent better: a 10k vocabulary cuts the output layer (most of baseline's "
            "FLOPs) 5x, and the saving buys 6 layers; small models train stably at lr 5e-4",
            vocab_size=10_000, n_layer=6, learning_rate=5e-4,
        ),
        _variant(
            "optimal_fast",
            "Fewest FLOPs per token: 10k vocabulary, 128-wide embeddings, lr 1e-3 so a tiny model "
            "converges in half of baseline's iterations",
            vocab_size=10_000, n_embd=128, learning_rate=1e-3, max_iters=600, warmup_iters=50,
        ),
        # Block designs of today's small models, at baseline's parameter count (docs/architectures.md).
        _variant("arch_llama", "Llama-style blocks: RMSNorm, rotary positions, SwiGLU MLP (704 wide), no biases",
                 **LLAMA),
        _variant("arch_gqa", "arch_llama with 2 key/value heads for its 4 query heads; the MLP widened to "
                 "784 to keep the parameter count", **LLAMA, n_kv_head=2, mlp_hidden=784),
        _variant("arch_deep_thin", "MobileLLM's shape: arch_llama's parameters spent on 8 layers at 224 wide "
                 "(SwiGLU 592 wide)", **LLAMA, n_layer=8, n_embd=224, mlp_hidden=592),
        _variant("arch_untied", "baseline with an untied output head (12.9M more parameters, the same FLOPs)",
                 tie_embeddings=False),
    ]
}


# ---------------------------------------------------------------------------------------------
# Custom experiments without editing source: an experiments file and --set overrides.


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`["n_layer=6", "learning_rate=3e-4"]` -> typed dict, each key and value checked."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {pair!r} is not key=value; write it as e.g. --set n_layer=6")
        if key not in FIELD_TYPES or key == "name":
            raise UserError(
                f"--set {key!r} is not a setting{closest(key, FIELD_TYPES)}; "
                "`python studies.py details baseline` lists every setting"
            )
        out[key] = coerce(key, value.strip())
    return out


def load_experiments_file(
    path: str | Path, registry: Mapping[str, ExperimentConfig] | None = None
) -> dict[str, ExperimentConfig]:
    """The registry plus the experiments a TOML or JSON file defines.

    Each top-level table is one experiment; `base` names the experiment it starts from
    (default baseline), every other key is a setting::

        [wide_lr]
        base = "arch_wide"
        learning_rate = 3e-4
        description = "8 heads at a higher learning rate"
    """
    registry = dict(EXPERIMENT_CONFIGS if registry is None else registry)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiments file {str(path)!r} does not exist; give the path of a .toml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table of experiments, one per name")
    for name, settings in data.items():
        if not isinstance(settings, dict):
            raise UserError(f"{path}: [{name}] must be a table of settings, got {settings!r}")
        settings = dict(settings)
        base = settings.pop("base", "baseline")
        inner = settings.pop("name", name)  # a config copied from a results file carries its name
        if inner != name:
            raise UserError(f"{path}: [{name}] sets name = {inner!r}; an experiment's name is its table's "
                            f"name: drop the name key or rename the table to [{inner}]")
        if base not in registry:
            raise UserError(f"{path}: [{name}] base {base!r} is not an experiment{closest(str(base), registry)}")
        settings.setdefault("description", f"custom experiment from {path.name}")
        try:
            registry[name] = registry[base].replace(name=name, **settings)
        except UserError as e:
            raise UserError(f"{path}: [{name}]: {e}") from None
    return registry
