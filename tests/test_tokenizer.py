import os
import subprocess
import sys

import pytest

from slm_tune.data.tokenizer import get_tokenizer

TEXT = ("Once upon a time, Lily's cat—naïve & brave—ate 12,345 berries! 😀 Ünïcödé, tabs\tand\n\n"
        "new lines, and the literal text <|endoftext|> too.   ")


@pytest.mark.parametrize("n", [257, 1000, 10_000, 25_000, 50_257])
def test_every_vocab_size_round_trips_exactly(n):
    enc = get_tokenizer(n)
    assert enc.n_vocab == n and enc.eot_token == n - 1
    ids = enc.encode_ordinary(TEXT)
    assert enc.decode(ids) == TEXT
    assert max(ids) < n - 1  # no clipping, no UNK: ordinary text never uses the EOT id


def test_smaller_vocabularies_need_more_tokens():
    lengths = [len(get_tokenizer(n).encode_ordinary(TEXT * 5)) for n in (257, 1000, 10_000, 50_257)]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]


def test_full_vocabulary_is_gpt2():
    assert get_tokenizer(50_257).encode_ordinary("Hello world") == [15496, 995]


def test_vocab_size_out_of_range_is_a_user_error():
    from slm_tune.errors import UserError
    with pytest.raises(UserError, match="outside what the GPT-2 tokenizer gives"):
        get_tokenizer(60_000)


def test_ranks_come_from_pypi_when_tiktoken_cannot_download(tmp_path):
    """A machine that reaches only PyPI: tiktoken fails, the whisper sdist supplies the ranks."""
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "empty"), SLM_TUNE_CACHE=str(tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    code = ("import tiktoken\n"
            "try:\n    tiktoken.get_encoding('gpt2'); print('tiktoken-online')\n"
            "except Exception:\n    pass\n"
            "from slm_tune.data.tokenizer import get_tokenizer\n"
            "print(get_tokenizer(50257).encode_ordinary('Hello world'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if "tiktoken-online" in out.stdout:
        pytest.skip("tiktoken's host is reachable here, so the fallback is not exercised")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[15496, 995]" in out.stdout
    assert (tmp_path / "c" / "gpt2.tiktoken").is_file()
