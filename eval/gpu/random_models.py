"""Random-weight model folders for speed runs on a machine that cannot hold the real weights (a lent GPU
machine takes at most 64 MiB of files): a step costs the same whatever the weights hold.

    python3 eval/gpu/random_models.py SMOLLM2_FOLDER OUT_FOLDER

SMOLLM2_FOLDER is a HF folder of SmolLM2-135M (the de-quantised cache `ragsvc` writes under
<data dir>/models): its config makes OUT_FOLDER/smol, and Qwen2.5-1.5B's shape (28 layers, 1536 wide, 12 query /
2 KV heads, 151,936-token vocabulary, tied head) makes OUT_FOLDER/qwen. Both take SmolLM2's tokenizer, whose ids
fit either vocabulary. Weights are drawn on the GPU when there is one, in bf16.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

QWEN_1_5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                 tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                 bos_token_id=1, eos_token_id=2)


def main(src: Path, root: Path) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, config in (("smol", AutoConfig.from_pretrained(src)), ("qwen", Qwen2Config(**QWEN_1_5B))):
        start = time.perf_counter()
        out = root / name
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(out)
        for f in src.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and not (out / f.name).exists():
                shutil.copy(f, out / f.name)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name}: {params:.0f}M parameters in {out} ({time.perf_counter() - start:.1f} s)", flush=True)
        del model


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
