"""Corpora, the storyworld generator and the token cache."""

from slm_tune.data.cache import TokenData, prepare_tokens
from slm_tune.data.corpora import Corpus, corpus_fingerprint, load_corpus

__all__ = ["Corpus", "TokenData", "corpus_fingerprint", "load_corpus", "prepare_tokens"]
