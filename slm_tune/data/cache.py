"""The token cache: each corpus tokenized once per (corpus, tokenizer, data fraction).

An entry is a folder with ``train.bin`` and ``validation.bin`` (flat uint16, or uint32 where the
vocabulary needs it, `<|endoftext|>` after every document) and ``meta.json`` (token, byte and
document counts, checksums, tokenizer, source). Experiments that differ only in model settings
share an entry. Concurrency and crashes:
- a file lock per entry: one process builds, the others wait and then read what it built;
- an entry is built in a temporary folder and renamed into place when complete, so a crash never
  leaves a partial entry that looks whole;
- every load checks sizes and checksums against meta.json; a damaged entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.compute as pc
from filelock import FileLock

from slm_tune.config import ExperimentConfig
from slm_tune.data.corpora import corpus_fingerprint, describe_split, load_corpus, split_by_position, texts
from slm_tune.errors import UserError
from slm_tune.data.tokenizer import EOT, default_cache_dir, get_tokenizer, tokenizer_name

CACHE_FORMAT = 2  # 2: byte-order marks dropped, short corpora split by position
SPLITS = ("train", "validation")
FRACTION_SEED = 0
Log = Callable[[str], None]


@dataclass(frozen=True)
class TokenData:
    """A loaded cache entry: memory-mapped token arrays and their metadata."""

    path: Path
    meta: dict[str, Any]
    train: np.ndarray
    validation: np.ndarray

    def tokens_per_byte(self, split: str = "validation") -> float:
        s = self.meta["splits"][split]
        return s["tokens"] / s["bytes"]

    @property
    def entropy_bpb(self) -> float | None:
        """The corpus's true entropy (storyworld only): the floor for val_bpb."""
        return self.meta["source"].get("entropy_bpb")


def entry_key(dataset: str, vocab_size: int, data_fraction: float) -> str:
    fingerprint = corpus_fingerprint(dataset)
    ident = json.dumps([CACHE_FORMAT, fingerprint, tokenizer_name(vocab_size), data_fraction])
    digest = hashlib.sha1(ident.encode()).hexdigest()[:12]
    readable = fingerprint.split("-")[0] if not fingerprint.startswith("path-") else fingerprint.split("-")[1]
    readable = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in readable)[:40]
    return f"{readable}-{tokenizer_name(vocab_size)}-f{data_fraction:g}-{digest}"


def _checksum(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _load_entry(path: Path) -> TokenData | None:
    """The entry at `path` if it is complete and undamaged, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        arrays = {}
        for split in SPLITS:
            info = meta["splits"][split]
            f = path / f"{split}.bin"
            itemsize = np.dtype(meta["dtype"]).itemsize
            if f.stat().st_size != info["tokens"] * itemsize or _checksum(f) != info["checksum"]:
                return None
            arrays[split] = np.memmap(f, dtype=meta["dtype"], mode="r")
        return TokenData(path, meta, arrays["train"], arrays["validation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _tokenize_batch(batch: dict[str, list[str]], vocab_size: int) -> dict[str, list]:
    """A batch of documents -> one row: their tokens, flat, `<|endoftext|>` after each.

    The batch is encoded as one text joined by `<|endoftext|>`: tiktoken splits at special tokens
    before its regex, so this is exactly per-document encoding, without a Python round trip per
    (often short) document: 1.8x faster. A batch whose text itself contains the marker is encoded
    document by document, so the marker stays ordinary text there. One flat array per batch (not
    one list per document) spares datasets converting millions of Python ints to Arrow.
    """
    enc = get_tokenizer(vocab_size)
    texts = batch["text"]
    dtype = _dtype(vocab_size)
    if any(EOT in t for t in texts):
        ids = enc.encode_ordinary_batch(texts, num_threads=1)  # parallel across processes instead
        flat = np.concatenate([np.asarray([*x, enc.eot_token], dtype=dtype) for x in ids])
    else:
        flat = np.asarray(enc.encode(EOT.join(texts) + EOT, allowed_special={EOT}) if texts else [], dtype=dtype)
    return {"ids": [flat], "n_bytes": [sum(len(t.encode("utf-8")) for t in texts)]}


def _dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def _subset(train, fraction: float, by_position: bool = False):
    """The training documents a data_fraction keeps: a seeded random subset of the documents, or,
    for a corpus split by position (too few documents), the first `fraction` of its text."""
    if fraction >= 1.0:
        return train
    if by_position:
        return texts(split_by_position(train["text"], fraction)[0])
    k = max(1, round(len(train) * fraction))
    keep = np.sort(np.random.default_rng(FRACTION_SEED).permutation(len(train))[:k])
    return train.select(keep)


def _build(dataset: str, vocab_size: int, data_fraction: float, target: Path, log: Log,
           num_proc: int | None) -> None:
    started = time.perf_counter()
    corpus = load_corpus(dataset)
    how = describe_split(corpus.info)
    log(f"tokenizing {dataset} with {tokenizer_name(vocab_size)} (data_fraction={data_fraction:g}"
        + (f"; {how}" if how else "") + (f"; documents from column {corpus.info['column']!r}" if "column" in corpus.info
                                          else "") + f") into {target}")
    if corpus.info.get("replaced_bytes"):
        log(f"warning: {dataset}: {corpus.info['replaced_bytes']:,} byte sequence(s) that are not UTF-8 were replaced "
            "with U+FFFD; convert the file to UTF-8 to keep them")
    get_tokenizer(vocab_size)  # find the ranks once here, before any worker needs them
    by_position = corpus.info.get("split", {}).get("by") == "position"
    splits = {"train": _subset(corpus.splits["train"], data_fraction, by_position),
              "validation": corpus.splits["validation"]}
    dtype = _dtype(vocab_size)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta: dict[str, Any] = {
        "format": CACHE_FORMAT, "dataset": dataset, "fingerprint": corpus_fingerprint(dataset),
        "tokenizer": tokenizer_name(vocab_size), "vocab_size": vocab_size,
        "data_fraction": data_fraction, "dtype": np.dtype(dtype).name, "source": corpus.info,
        "split": corpus.info.get("split", {}),
        "splits": {},
    }
    total_bytes = 0
    tokenize_seconds = 0.0
    for split, ds in splits.items():
        t0 = time.perf_counter()
        # Processes, not tiktoken's threads, scale here (bench/README.md); below a few MB the
        # workers cost more to start than they save. Arrow's buffer size stands in for the text's.
        procs = num_proc or (min(os.cpu_count() or 1, 8) if ds.data.nbytes > 4_000_000 else 1)
        mapped = ds.map(
            _tokenize_batch, batched=True, batch_size=2000, num_proc=procs if procs > 1 else None,
            fn_kwargs={"vocab_size": vocab_size}, remove_columns=ds.column_names,
            keep_in_memory=not ds.cache_files,  # a generated corpus: no disk cache to reuse
            desc=f"Tokenizing {split} ({tokenizer_name(vocab_size)})",
        )
        table = mapped.with_format("arrow")[:]
        tokens = pc.list_flatten(table.column("ids")).to_numpy().astype(dtype, copy=False)
        n_bytes = int(pc.sum(table.column("n_bytes")).as_py() or 0)
        tokenize_seconds += time.perf_counter() - t0
        tokens.tofile(tmp / f"{split}.bin")
        meta["splits"][split] = {"tokens": int(tokens.size), "bytes": n_bytes, "documents": len(ds),
                                 "checksum": _checksum(tmp / f"{split}.bin")}
        total_bytes += n_bytes
    seconds = time.perf_counter() - started
    meta["build_seconds"] = round(seconds, 3)
    meta["tokenize_seconds"] = round(tokenize_seconds, 3)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)  # a damaged entry, if any
    os.replace(tmp, target)
    log(f"tokenized {total_bytes / 1e6:.1f} MB in {tokenize_seconds:.1f} s "
        f"({total_bytes / 1e6 / max(tokenize_seconds, 1e-9):.1f} MB/s; {seconds:.1f} s with loading the corpus)")


def check_data(c: ExperimentConfig, data: TokenData) -> None:
    """A one-line error when the corpus cannot fill the config's blocks or the vocabularies differ."""
    for split in ("train", "validation"):
        n = len(getattr(data, split))
        if n <= c.block_size + 1:
            raise UserError(
                f"the {split} split of {c.dataset!r} has {n} tokens, too few for block_size="
                f"{c.block_size}; use a larger corpus or a smaller block_size"
            )
    if data.meta["vocab_size"] != c.vocab_size:
        raise ValueError(f"token data is for vocab_size={data.meta['vocab_size']}, config wants {c.vocab_size}")


def prepare_tokens(
    dataset: str,
    vocab_size: int,
    data_fraction: float = 1.0,
    cache_dir: str | Path | None = None,
    log: Log | None = None,
    num_proc: int | None = None,
) -> TokenData:
    """The token cache entry for this corpus, tokenizer and fraction, built if missing or damaged."""
    log = log or (lambda _msg: None)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    tokens_dir = root / "tokens"
    tokens_dir.mkdir(parents=True, exist_ok=True)
    target = tokens_dir / entry_key(dataset, vocab_size, data_fraction)
    found = _load_entry(target)
    if found is not None:
        return found
    with FileLock(str(target) + ".lock"):
        found = _load_entry(target)  # another process may have built it while we waited
        if found is not None:
            return found
        if target.exists():
            log(f"token cache entry {target.name} is damaged or incomplete: rebuilding it")
        _build(dataset, vocab_size, data_fraction, target, log, num_proc)
    data = _load_entry(target)
    if data is None:
        raise OSError(f"token cache entry {target} failed its check right after it was built")
    return data
