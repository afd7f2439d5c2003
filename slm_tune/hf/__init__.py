"""Hugging Face export (docs/export.md): a trained model as transformers' own GPT-2 or Llama
class, safetensors weights, a `tokenizers` tokenizer with the model's exact vocabulary, a model
card, and an optional push to the Hub. Needs the `hf` extra: pip install -e .[hf]."""
