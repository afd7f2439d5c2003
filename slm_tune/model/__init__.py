"""The trial side's model: torch only, no Ray.

gpt.py (the GPT and its blocks), losses.py (the fused output layer and loss), compiling.py
(torch.compile, when it pays), checkpoints.py (the one weights-only loader), generation.py (text
from a model file) and counts.py (parameters and FLOPs as functions of the config: plain Python,
so the driver sizes trials with it without importing torch). This file imports nothing, so that
`slm_tune.model.counts` costs no torch.
"""
