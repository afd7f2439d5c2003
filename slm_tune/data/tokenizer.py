"""GPT-2's BPE through tiktoken, at any vocabulary size from 257 to 50,257.

A vocabulary of N tokens keeps GPT-2's first N-1 merge ranks and puts `<|endoftext|>` at id N-1.
Every byte is among the first 256 ranks and BPE only merges pairs it has ranks for, so each
truncated encoding is a real, lossless tiktoken Encoding: any text encodes and decodes back
exactly, with no unknown tokens and no clipped ids.

The 50,256 GPT-2 ranks are found, in order: through tiktoken itself (its cache,
TIKTOKEN_CACHE_DIR, or its download); in slm_tune's own cache; in the openai-whisper 20250625
source distribution on PyPI (whisper/assets/gpt2.tiktoken, identical ranks), fetched with pip
without installing it and checked against its SHA-256. So a machine that reaches only PyPI works.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

from slm_tune.config import GPT2_VOCAB_SIZE, MIN_VOCAB_SIZE
from slm_tune.errors import UserError
from slm_tune.files import write_bytes

EOT = "<|endoftext|>"
WHISPER_SDIST = "openai-whisper==20250625"
WHISPER_RANKS_MEMBER = "whisper/assets/gpt2.tiktoken"
WHISPER_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def default_cache_dir() -> Path:
    """Where slm_tune keeps what it builds once per machine (ranks, token caches)."""
    env = os.environ.get("SLM_TUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slm_tune"


def tokenizer_name(vocab_size: int) -> str:
    return "gpt2" if vocab_size == GPT2_VOCAB_SIZE else f"gpt2-{vocab_size}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ranks_from_whisper_sdist(target: Path) -> None:
    """Fetch the whisper sdist with pip (no install), extract and verify the GPT-2 ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "--quiet", "-d", tmp, WHISPER_SDIST]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        archives = list(Path(tmp).glob("openai_whisper-*.tar.gz")) + list(Path(tmp).glob("openai-whisper-*.tar.gz"))
        if not archives:
            raise OSError(f"pip download {WHISPER_SDIST} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        with tarfile.open(archives[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(WHISPER_RANKS_MEMBER)), None)
            if member is None:
                raise OSError(f"{archives[0].name} has no {WHISPER_RANKS_MEMBER}")
            data = tar.extractfile(member).read()
        if hashlib.sha256(data).hexdigest() != WHISPER_RANKS_SHA256:
            raise OSError(f"{WHISPER_RANKS_MEMBER} from {archives[0].name} failed its SHA-256 check")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, data)


@functools.lru_cache(maxsize=1)
def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's 50,256 mergeable ranks, from the first source that has them."""
    errors = []
    try:
        return dict(tiktoken.get_encoding("gpt2")._mergeable_ranks)
    except Exception as e:  # tiktoken raises requests' errors, OSError, ValueError...
        errors.append(f"tiktoken: {type(e).__name__}")
    cached = default_cache_dir() / "gpt2.tiktoken"
    if cached.is_file() and _sha256(cached) != WHISPER_RANKS_SHA256:
        cached.unlink()  # damaged: fetch it again
    if not cached.is_file():
        try:
            _ranks_from_whisper_sdist(cached)
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(f"PyPI: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if cached.is_file():
        return load_tiktoken_bpe(str(cached), expected_hash=WHISPER_RANKS_SHA256)
    raise UserError(
        "cannot find the GPT-2 BPE ranks (" + "; ".join(errors) + "); point TIKTOKEN_CACHE_DIR "
        "at a folder holding tiktoken's gpt2 files, or let the machine reach PyPI or tiktoken's host"
    )


@functools.lru_cache(maxsize=8)
def get_tokenizer(vocab_size: int = GPT2_VOCAB_SIZE) -> tiktoken.Encoding:
    """GPT-2's BPE with `vocab_size` tokens, `<|endoftext|>` the last id."""
    if not MIN_VOCAB_SIZE <= vocab_size <= GPT2_VOCAB_SIZE:
        raise UserError(
            f"vocab_size={vocab_size} is outside what the GPT-2 tokenizer gives "
            f"({MIN_VOCAB_SIZE:,} to {GPT2_VOCAB_SIZE:,}); choose a size in that range"
        )
    ranks = gpt2_ranks()
    if vocab_size < GPT2_VOCAB_SIZE:
        ranks = {token: rank for token, rank in ranks.items() if rank < vocab_size - 1}
    return tiktoken.Encoding(
        name=tokenizer_name(vocab_size),
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT: vocab_size - 1},
    )
