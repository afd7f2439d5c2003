"""The model's vocabulary as a Hugging Face `tokenizers` byte-level BPE: GPT-2's first K-1 ranks
(slm_tune.data.tokenizer) and `<|endoftext|>` at id K-1, converted by transformers' own
TikTokenConverter (every merge tiktoken could make, ranked as tiktoken ranks it, on GPT-2's
split pattern), so AutoTokenizer gives the ids slm-tune trains on."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from tiktoken_ext.openai_public import r50k_pat_str

from slm_tune.data.tokenizer import EOT, get_tokenizer


def hf_tokenizer(vocab_size: int):
    """A PreTrainedTokenizerFast with exactly the encoding get_tokenizer(vocab_size) has."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    enc = get_tokenizer(vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        ranks = Path(tmp) / "ranks.tiktoken"  # tiktoken's own file format: base64 token, rank
        ranks.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n"
                                 for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])))
        converter = TikTokenConverter(vocab_file=str(ranks), pattern=r50k_pat_str, extra_special_tokens=[EOT])
        backend = converter.converted()
    if backend.token_to_id(EOT) != enc.eot_token:  # ranks 0..K-2, then the special token
        raise RuntimeError(f"{EOT} converted to id {backend.token_to_id(EOT)}, not {enc.eot_token}")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT, unk_token=None,
                                   model_max_length=int(1e30), clean_up_tokenization_spaces=False)
