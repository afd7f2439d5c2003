"""Every corpus, behind one function: a dataset spec in, a DatasetDict (train, validation; "text") out.

Specs:
- ``storyworld`` (default) or ``storyworld:train=N,validation=M,seed=S``: the embedded corpus.
- ``tinystories``: roneneldan/TinyStories from the Hugging Face Hub (the seed's data).
- ``hf:owner/name``: any Hub dataset with a ``text`` column.
- a local path: a .txt file (documents separated by blank lines or ``<|endoftext|>``), .jsonl or
  .json with a ``text`` field, .parquet, or a directory written by ``datasets.save_to_disk``.

A corpus with only one split gets a deterministic validation split carved out of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm_tune.data import storyworld
from slm_tune.errors import UserError

VALIDATION_FRACTION = 0.05
SPLIT_SEED = 0
if TYPE_CHECKING:  # imported where a corpus is read: a cached corpus never needs it (0.5 s)
    import datasets

_STORYWORLD_KEYS = {"train": storyworld.DEFAULT_TRAIN_STORIES,
                    "validation": storyworld.DEFAULT_VALIDATION_STORIES, "seed": 0}


@dataclass
class Corpus:
    splits: datasets.DatasetDict
    info: dict[str, Any] = field(default_factory=dict)  # source, and entropy_bpb for storyworld


def _storyworld_args(spec: str) -> dict[str, int]:
    args = dict(_STORYWORLD_KEYS)
    _, _, rest = spec.partition(":")
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in args or not value.strip().isdigit():
            raise UserError(
                f"dataset {spec!r}: {part!r} is not one of train=N, validation=N, seed=N; "
                "e.g. storyworld:train=2000,validation=200"
            )
        args[key] = int(value)
    if args["train"] < 1 or args["validation"] < 1:
        raise UserError(f"dataset {spec!r}: train and validation need at least 1 story each")
    return args


def _hash_path(path: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def corpus_fingerprint(spec: str) -> str:
    """What determines the corpus's content, cheaply: the token cache's key is built on it."""
    if spec == "storyworld" or spec.startswith("storyworld:"):
        a = _storyworld_args(spec)
        return f"storyworld-v{storyworld.STORYWORLD_VERSION}-t{a['train']}-v{a['validation']}-s{a['seed']}"
    if spec == "tinystories" or spec.startswith("hf:"):
        return spec  # the Hub's datasets are versioned by their ids; datasets caches them itself
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"dataset {spec!r} is not storyworld, tinystories, hf:owner/name or an existing path; "
            "check the path or use --dataset storyworld"
        )
    return f"path-{path.name}-{_hash_path(path)}"


def _read_txt(path: Path) -> datasets.Dataset:
    import datasets

    text = path.read_text(encoding="utf-8", errors="replace")
    parts = text.split("<|endoftext|>") if "<|endoftext|>" in text else re.split(r"\n\s*\n", text)
    docs = [p.strip() for p in parts if p.strip()]
    return datasets.Dataset.from_dict({"text": docs})


def _load_path(path: Path) -> datasets.DatasetDict | datasets.Dataset:
    import datasets

    suffix = path.suffix.lower()
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise UserError(
                f"dataset directory {str(path)!r} was not written by datasets.save_to_disk; "
                "give a .txt, .jsonl, .json or .parquet file, or such a directory"
            ) from None
    if suffix == ".txt":
        return _read_txt(path)
    if suffix in (".jsonl", ".json"):
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    raise UserError(f"dataset {str(path)!r}: unknown file type {suffix!r}; use .txt, .jsonl, .json or .parquet")


def _load_hub(name: str, spec: str) -> datasets.DatasetDict:
    import datasets

    try:
        return datasets.load_dataset(name)
    except (ConnectionError, OSError, ValueError) as e:  # offline, unreachable, unknown id
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot load {spec!r} from the Hugging Face Hub ({first}); "
            "use --dataset storyworld (embedded, no download) or a local path"
        ) from None


def _as_splits(loaded: datasets.DatasetDict | datasets.Dataset, spec: str) -> datasets.DatasetDict:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    for split in loaded.values():
        if "text" not in split.column_names:
            raise UserError(
                f"dataset {spec!r} has no 'text' column (it has: {', '.join(split.column_names)}); "
                "give a corpus whose documents are in a column named text"
            )
    loaded = datasets.DatasetDict({k: v.select_columns(["text"]) for k, v in loaded.items()})
    train = loaded.get("train") or next(iter(loaded.values()))
    validation = loaded.get("validation") or loaded.get("valid") or loaded.get("test")
    if validation is None:
        if len(train) < 2:
            raise UserError(
                f"dataset {spec!r} has {len(train)} document(s); it needs at least 2 to carve out a "
                "validation split (separate documents by blank lines)"
            )
        n_val = max(1, round(len(train) * VALIDATION_FRACTION))
        parts = train.train_test_split(test_size=n_val, seed=SPLIT_SEED, shuffle=True)
        train, validation = parts["train"], parts["test"]
    if sum(len(t) for t in train["text"][:1000]) == 0:
        raise UserError(f"dataset {spec!r} has no text; give a corpus with non-empty documents")
    return datasets.DatasetDict({"train": train, "validation": validation})


def load_corpus(spec: str) -> Corpus:
    """The corpus a dataset spec names, as train and validation splits with a text column."""
    import datasets

    if spec == "storyworld" or spec.startswith("storyworld:"):
        a = _storyworld_args(spec)
        train, validation = storyworld.generate_splits(a["train"], a["validation"], a["seed"])
        splits = datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": [s.text for s in train]}),
            "validation": datasets.Dataset.from_dict({"text": [s.text for s in validation]}),
        })
        info = {"source": "storyworld", "storyworld_version": storyworld.STORYWORLD_VERSION, **a,
                "entropy_bpb": storyworld.entropy_bits_per_byte(validation)}
        return Corpus(splits, info)
    if spec == "tinystories":
        return Corpus(_as_splits(_load_hub("roneneldan/TinyStories", spec), spec), {"source": spec})
    if spec.startswith("hf:"):
        name = spec[3:]
        if "/" not in name and not name:
            raise UserError(f"dataset {spec!r}: write it as hf:owner/name")
        return Corpus(_as_splits(_load_hub(name, spec), spec), {"source": spec})
    corpus_fingerprint(spec)  # raises the one-line error for a missing path
    path = Path(spec).expanduser()
    return Corpus(_as_splits(_load_path(path), spec), {"source": str(path.resolve())})
