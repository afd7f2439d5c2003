"""The Hugging Face export, checked with transformers itself: its own classes load each export
with no custom code and compute slm-tune's logits and greedy tokens; its tokenizer gives
slm-tune's ids; the pipeline runs; nothing in an export is a pickle."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cli, tiny
from slm_tune.data.tokenizer import get_tokenizer

LLAMA = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False)
DESIGNS = {
    "gpt2_small_vocab": {},
    "gpt2_full_vocab": dict(vocab_size=50_257),
    "llama_gqa": dict(**LLAMA, n_kv_head=1),
    "llama_untied_bias": dict(LLAMA, bias=True, tie_embeddings=False, rope_theta=500.0),
    "llama_mup": dict(**LLAMA, n_kv_head=1, parametrization="mup", mup_base_width=16, n_embd=64, mup_output_mult=2.5,
                      mup_attn_mult=3.0),
    "gpt2_mup_no_bias": dict(parametrization="mup", mup_base_width=16, bias=False, mup_attn_mult=0.5),
    "gpt2_completep": dict(n_layer=3, depth_parametrization="completep", base_depth=1),
    "llama_depth_mup": dict(LLAMA, bias=True, n_layer=2, depth_parametrization="depth_mup", base_depth=1),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Each design trained for a few iterations, its best_model file written as a study writes it."""
    from analysis.export import export_best_model
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    out = tmp_path_factory.mktemp("trained")
    for name, design in DESIGNS.items():
        c = tiny(name=name, max_iters=12, eval_interval=12, **design)
        trial = out / "ray_results" / "study_x" / name
        train(c, prepare_tokens(c.dataset, c.vocab_size),
              report=lambda m, save: save and save(trial / f"checkpoint_{m['iteration']:06d}"))
        export_best_model(pd.DataFrame({"trial_path": [str(trial)]}), out / f"best_model_{name}.pt")
    return out


@pytest.mark.parametrize("name", list(DESIGNS))
def test_export_computes_the_models_logits_and_greedy_tokens(trained, tmp_path, name):
    from transformers import AutoModelForCausalLM

    from slm_tune.model.generation import load_model

    ran = run_cli("export", name, "--output-dir", str(trained), "--to", str(tmp_path / name))
    assert ran.returncode == 0, ran.stderr
    assert "GPT2LMHeadModel" in ran.stdout if name.startswith("gpt2") else "LlamaForCausalLM" in ran.stdout
    ours, c, _ = load_model(trained / f"best_model_{name}.pt")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / name, dtype=torch.float32).eval()
    assert not any(p.suffix in (".pt", ".bin", ".pkl", ".pickle") for p in (tmp_path / name).iterdir())
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, c.vocab_size, (3, c.block_size), generator=g)
    with torch.no_grad():
        expected = torch.nn.functional.linear(ours.readout(ours.hidden(idx)), ours.head_weight)
        assert (theirs(idx).logits - expected).abs().max() <= 1e-4
    prompt = idx[:1, :6]
    eot = c.vocab_size - 1
    greedy = ours.generate(prompt, 20, temperature=0, stop_token=eot)
    generated = theirs.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=eot, pad_token_id=eot)
    assert generated[0].tolist() == greedy[0].tolist()


def test_tokenizer_gives_slm_tunes_ids(trained, tmp_path):
    from transformers import AutoTokenizer

    from slm_tune.data.corpora import load_corpus

    for name, vocab in (("gpt2_small_vocab", 1000), ("gpt2_full_vocab", 50_257)):
        assert run_cli("export", name, "--output-dir", str(trained), "--to", str(tmp_path / name)).returncode == 0
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        enc = get_tokenizer(vocab)
        assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == vocab - 1
        validation = load_corpus("storyworld:train=10").splits["validation"]["text"]  # storyworld's whole validation split
        texts = ["<|endoftext|>".join(validation),
                 "Zoë's café «naïve» 日本語 😀\r\nsecond line\r\n<|endoftext|>After the end.\n\n\t  spaces  "]
        for text in texts:
            ids = tok.encode(text)
            assert ids == enc.encode(text, allowed_special="all"), text[:60]
            assert tok.decode(ids) == text


def test_pipeline_runs_and_the_card_describes_the_model(trained, tmp_path):
    from transformers import pipeline

    assert run_cli("export", "llama_gqa", "--output-dir", str(trained)).returncode == 0
    folder = trained / "hf" / "llama_gqa"  # the default destination
    text = pipeline("text-generation", model=str(folder))("Once upon a time", max_new_tokens=8)[0]["generated_text"]
    assert text.startswith("Once upon a time")
    card = (folder / "README.md").read_text()
    for fact in ("LlamaForCausalLM", "study_x", "bits per byte", "n_kv_head | 1", "A sample"):
        assert fact in card
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 999


def test_unexportable_designs_and_missing_extras_are_one_line(trained, tmp_path, monkeypatch):
    from slm_tune.hf.mapping import target_class

    with pytest.raises(Exception, match="pos=rope exports as LlamaForCausalLM, which needs norm=rmsnorm"):
        target_class(tiny(pos="rope"))
    with pytest.raises(Exception, match="needs qk_norm=false"):
        target_class(tiny(**LLAMA, qk_norm=True))
    with pytest.raises(Exception, match="GPT-2 has no grouped-query attention"):
        target_class(tiny(n_kv_head=1))
    ran = run_cli("export", "nothing_here", "--output-dir", str(trained))
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "does not exist" in ran.stderr
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the hf extra were not installed
    ran = run_cli("export", "llama_gqa", "--output-dir", str(trained))
    assert ran.returncode == 2 and "pip install -e .[hf]" in ran.stderr and ran.stderr.count("\n") == 1


def test_push_without_network_keeps_the_export(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    ran = run_cli("export", "gpt2_small_vocab", "--output-dir", str(trained), "--to", str(tmp_path / "e"),
                  "--push-to-hub", "someone/storyworld-tiny")
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error")]
    assert ran.returncode == 1 and len(errors) == 1 and "the export is kept" in errors[0]
    assert "Traceback" not in ran.stderr
    assert (tmp_path / "e" / "model.safetensors").is_file()
