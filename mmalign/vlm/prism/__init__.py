"""PRISM (Li et al. 2025, "PRISM: Robust VLM Alignment with Principled Reasoning for Integrated
Safety in Multimodality"): safety-aware structured reasoning for vision-language models.

- `format`: the four tagged stages of PRISM-CoT as special tokens, and the stage parser;
- `mcts`: the step-level search (nodes are whole stages, UCB, judge values backed up) and the
  preference pairs it yields;
- `generate`: batched stage generation (stop at the closing tag, prefill the next opening one);
- `judges`: the pluggable judges (`toy`, `vlm:<model>`, a Python callable);
- `search`: trees run in batches, saved one file each, resumable (`mmalign data prism-mcts`);
- `settings`: what the trees depend on (`search.json`), checked when a search resumes;
- `evaluate`: attack success, over-refusal, benign accuracy and format compliance.
"""
