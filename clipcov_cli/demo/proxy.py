"""The demo's proxy CLIP: shipped in the package as a compact file (trained once by
scripts/train_demo_proxy.py), expanded into a plain open_clip state dict for `clipcov embed`."""

from __future__ import annotations

from pathlib import Path

PROXY_MODEL = "clipcov-proxy"
PACKED = Path(__file__).resolve().parent / "proxy" / "clipcov-proxy.pt"
TOKEN_KEY = "token_embedding.weight"


def proxy_templates() -> tuple[str, ...]:
    """The proxy's zero-shot prompts: the form of the captions it was trained on (the clean split's
    "a photo of a {texture} {class}"), one per texture, averaged as CLIP's prompt ensembles are."""
    from clipcov_cli.corpus.captions import TEXTURE_WORDS

    return tuple(f"a photo of a {words[0]} {{c}}" for words in TEXTURE_WORDS.values())


def corpus_token_ids() -> list[int]:
    """Every token id the demo corpus can produce: its caption words, templates, boilerplate (digits
    included), zero-shot prompts and class names, and the start, end and padding tokens."""
    import open_clip

    from clipcov_cli.corpus import captions
    from clipcov_cli.corpus.concepts import all_concepts

    pieces: list[str] = [t.replace("{", " ").replace("}", " ") for t in (*captions.TEMPLATES, *captions.BOILERPLATE,
                                                                           *captions.PROMPT_TEMPLATES)]
    for table in (captions.SHAPE_SYNONYMS, captions.COLOUR_SYNONYMS, captions.TEXTURE_WORDS):
        pieces += [w for words in table.values() for w in words]
    pieces += [*captions.SIZE_WORDS, *captions.BACKGROUNDS, *(c.name for c in all_concepts()), *map(str, range(10))]
    pieces += [t.format(c=c.name) for t in captions.PROMPT_TEMPLATES for c in all_concepts()]
    tok = open_clip.get_tokenizer(PROXY_MODEL)
    ids = {0, tok.sot_token_id, tok.eot_token_id}
    for row in tok([p for p in pieces if p.strip()]).tolist():
        ids.update(row)
    return sorted(ids)


def pack_checkpoint(checkpoint: Path, provenance: dict, out: Path = PACKED) -> Path:
    """Write the compact file: float16 weights, and only the corpus' rows of the token embedding."""
    import torch

    from clipcov_cli.models import register_model_config
    from clipcov_cli.utils.atomic import atomic_path

    register_model_config()
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in raw.get("state_dict", raw).items()}
    ids = torch.tensor(corpus_token_ids(), dtype=torch.int64)
    table = sd.pop(TOKEN_KEY)
    packed = {"format": 1, "model": PROXY_MODEL, "provenance": provenance, "vocab_size": int(table.shape[0]),
              "token_ids": ids.to(torch.int32), "token_rows": table[ids].to(torch.float16),
              "state_dict": {k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in sd.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(packed, tmp)
    return out


def expand_checkpoint(dest: Path, packed: Path = PACKED) -> Path:
    """The shipped proxy as a plain float32 open_clip state dict at ``dest`` (skipped if present)."""
    import torch

    from clipcov_cli.errors import ClipcovError
    from clipcov_cli.utils.atomic import atomic_path

    if dest.exists():
        return dest
    if not packed.is_file():
        raise ClipcovError(f"the demo's proxy checkpoint {packed} is missing: run scripts/train_demo_proxy.py all")
    p = torch.load(packed, map_location="cpu", weights_only=True)
    sd = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in p["state_dict"].items()}
    rows = p["token_rows"].to(torch.float32)
    table = torch.zeros(p["vocab_size"], rows.shape[1], dtype=torch.float32)
    table[p["token_ids"].to(torch.int64)] = rows
    sd[TOKEN_KEY] = table
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        torch.save({"state_dict": sd}, tmp)
    return dest


def provenance(packed: Path = PACKED) -> dict:
    import torch

    return dict(torch.load(packed, map_location="cpu", weights_only=True)["provenance"])
