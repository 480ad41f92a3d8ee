"""Train the demo's proxy CLIP once and pack it into the package (clipcov_cli/demo/proxy/).

    python scripts/train_demo_proxy.py train --work /tmp/proxy-work     # generate the clean split, train
    python scripts/train_demo_proxy.py pack --work /tmp/proxy-work      # compact fp16 file + provenance

The proxy is the built-in `clipcov-proxy` architecture (a small ModifiedResNet image tower, width
16, 64 px, and clipcov-tiny's text tower) trained with `clipcov pretrain`'s code (open_clip_train,
recipe `tiny`) on a clean, class-balanced split drawn by the demo corpus' generator with its own corpus
seed (PROXY_CORPUS_SEED), so no image of a demo corpus (seed 0 by default) is in it: PER_CLASS images
per class, EPOCHS epochs in one cosine schedule. `pack` keeps the rows of the token embedding that the
corpus' words, prompts and boilerplate use (every other row is zero: those tokens never occur in the
demo) and stores the weights in float16, so the file stays small; the provenance (this script's
settings, torch and open_clip versions, the training time) goes into the file.
Same script, same torch and open_clip versions, same CPU: same weights (training is seeded, and runs
on TORCH_THREADS threads whatever the machine, so the reduction order does not change with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

PROXY_CORPUS_SEED = 1000
PER_CLASS = 400
EPOCHS = 20  # one cosine schedule (an interrupted run resumes: open_clip_train --resume latest, same schedule)
BATCH = 64
SEED = 0
TORCH_THREADS = 1


def train(work: Path) -> Path:
    import json

    import torch

    from clipcov_cli.corpus import CorpusConfig, generate_corpus, load_layout
    from clipcov_cli.demo.proxy import PROXY_MODEL
    from clipcov_cli.pretrain.config import PretrainConfig
    from clipcov_cli.pretrain.recipes import get_recipe
    from clipcov_cli.pretrain.runner import run_pretrain
    from dataclasses import replace

    corpus = work / "corpus"
    layout = load_layout(corpus) if (corpus / "corpus.json").exists() else generate_corpus(
        corpus, CorpusConfig(seed=PROXY_CORPUS_SEED, n_web=10, n_proxy_per_class=PER_CLASS, n_test_per_class=1))
    torch.set_num_threads(TORCH_THREADS)
    t0 = time.time()
    result = run_pretrain(PretrainConfig(data=layout.proxy_dir, out=work / "run", epochs=EPOCHS, batch_size=BATCH,
                                         recipe=replace(get_recipe("tiny"), model=PROXY_MODEL), workers=1,
                                         seed=SEED, device="cpu"))
    seconds = time.time() - t0
    (work / "train.json").write_text(json.dumps({"checkpoint": str(result.checkpoint), "seconds": round(seconds)}))
    print(f"trained {result.checkpoint} in {seconds:.0f} s", flush=True)
    return result.checkpoint


def pack(work: Path) -> Path:
    from clipcov_cli.demo.proxy import pack_checkpoint
    from clipcov_cli.pretrain.adapter import checkpoints

    import json

    import open_clip
    import torch

    from clipcov_cli.models import builtin_config_path

    ckpt = checkpoints(work / "run")[-1]
    trained = json.loads((work / "train.json").read_text()) if (work / "train.json").exists() else {}
    provenance = {"script": "scripts/train_demo_proxy.py", "proxy_corpus_seed": PROXY_CORPUS_SEED,
                  "per_class": PER_CLASS, "epochs": EPOCHS, "batch_size": BATCH, "seed": SEED, "recipe": "tiny",
                  "torch_threads": TORCH_THREADS, "torch": str(torch.__version__), "open_clip": str(open_clip.__version__),
                  "model_config": json.loads(builtin_config_path("clipcov-proxy").read_text()),
                  "train_seconds": trained.get("seconds"), "trained_checkpoint": ckpt.name}
    out = pack_checkpoint(ckpt, provenance)
    print(f"packed {ckpt} -> {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("train", "pack", "all"))
    p.add_argument("--work", type=Path, required=True)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.step in ("train", "all"):
        train(a.work)
    if a.step in ("pack", "all"):
        pack(a.work)


if __name__ == "__main__":
    main()
