"""Loading the proxy CLIP through open_clip: a named architecture (built-in, ``clipcov-tiny`` or a
``--model-config`` JSON) with weights from an open_clip tag or a local checkpoint file.

Local checkpoints (an open_clip state dict, an ``open_clip_train`` checkpoint with ``state_dict``
and maybe ``module.`` prefixes, or ``.safetensors``) are loaded with ``torch.load(weights_only=True)``;
a file that needs arbitrary unpickling is refused. The weights fingerprint is the sha256 of the
weights file, so an embeddings folder records exactly which weights made it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clipcov_cli.errors import ClipcovError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16", "amp")
RANDOM_INIT = ("none", "random")


@dataclass(frozen=True)
class ModelSpec:
    """Which proxy CLIP to load. ``pretrained`` is an open_clip tag or a local checkpoint path."""

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    model_config: Path | None = None
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0  # only for ``pretrained="none"`` (random weights, e.g. benchmarks)

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ClipcovError(f"unknown device {self.device!r}: use auto, cpu or cuda")
        if self.precision not in PRECISIONS:
            raise ClipcovError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")

    @property
    def pretrained_is_path(self) -> bool:
        return self.pretrained.lower() not in RANDOM_INIT and is_checkpoint_path(self.pretrained)

    @property
    def random_init(self) -> bool:
        return self.pretrained.lower() in RANDOM_INIT


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A proxy CLIP ready for inference (eval mode), with its eval transform and tokenizer."""

    model: Any  # open_clip CLIP / CustomTextCLIP, eval mode, on ``device``
    preprocess: Callable  # PIL image -> tensor (open_clip's eval transform)
    tokenizer: Callable  # list[str] -> LongTensor
    name: str  # the architecture name open_clip created it by
    weights_fingerprint: str  # "sha256:<hex>" of the weights file
    pretrained: str = ""  # the tag, or the checkpoint's absolute path
    device: str = "cpu"
    precision: str = "fp32"
    dim: int = 0  # embedding dimension

    @property
    def autocast(self) -> bool:
        return self.precision == "amp"


def is_checkpoint_path(pretrained: str) -> bool:
    """A ``--pretrained`` value names a file when it exists or looks like a path."""
    p = Path(pretrained).expanduser()
    return p.exists() or "/" in pretrained or p.suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipcovError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    return device


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def resolve_architecture(spec: ModelSpec) -> str:
    """Register clipcov's built-in configs (and the user's) and return the name to create."""
    from clipcov_cli.models import register_model_config

    register_model_config()
    if spec.model_config is not None:
        return register_model_config(spec.model_config)
    import open_clip

    if spec.model not in open_clip.list_models():
        raise ClipcovError(
            f"unknown model {spec.model!r}: use an open_clip architecture (e.g. ViT-B-32), clipcov-tiny, "
            "or --model-config PATH.json"
        )
    return spec.model


def _refusal(path: Path, exc: Exception) -> ClipcovError:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    what = f" (it contains {found.group(1)})" if found else ""
    return ClipcovError(
        f"refusing to load {path}: it needs arbitrary unpickling{what}, which can run code; "
        "re-save it as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors"
    )


def _load_file_weights(model: Any, path: Path) -> None:
    """Load an open_clip / open_clip_train checkpoint (``state_dict``, ``module.`` prefixes and
    .safetensors handled by open_clip) with ``weights_only=True``."""
    import open_clip

    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except (RuntimeError, KeyError, AttributeError, TypeError, ValueError, EOFError, StopIteration, OSError) as exc:
        first = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise ClipcovError(f"cannot load checkpoint {path} into {type(model).__name__} ({first})") from None


@contextlib.contextmanager
def _quiet_logging():
    """open_clip logs warnings and errors on the root logger (e.g. "No pretrained weights loaded")
    that clipcov reports itself, in one line: silence them while the model is created."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def _create(name: str, spec: ModelSpec, device: str, pretrained: str | None) -> tuple[Any, Callable]:
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    precision = "fp32" if spec.precision == "amp" else spec.precision
    try:
        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, precision=precision, device=device,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu")), weights_only=True,
            )
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Failed to download" in msg:
            raise ClipcovError(f"cannot download the {pretrained!r} weights of {name} (no network?): pass a local "
                               "checkpoint with --pretrained PATH, or fetch them once where the hub is reachable "
                               "(open_clip caches them under ~/.cache/huggingface)") from None
        raise ClipcovError(f"cannot load {name} with weights {pretrained!r}: {msg[:300]}") from None
    return model, preprocess


def _tag_file(name: str, tag: str) -> str:
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    return download_pretrained(get_pretrained_cfg(name, tag))


def _from_random(name: str, spec: ModelSpec, device: str) -> tuple[Any, Callable, str, str]:
    import torch

    torch.manual_seed(spec.seed)
    model, preprocess = _create(name, spec, "cpu", None)
    return model.to(device), preprocess, "none", f"random-init:{name}:seed{spec.seed}"


def _from_file(name: str, spec: ModelSpec, device: str) -> tuple[Any, Callable, str, str]:
    path = Path(spec.pretrained).expanduser().resolve()
    if not path.is_file():
        raise ClipcovError(f"checkpoint {spec.pretrained} does not exist")
    model, preprocess = _create(name, spec, "cpu", None)
    _load_file_weights(model, path)
    return model.to(device), preprocess, str(path), file_sha256(path)


def _from_tag(name: str, spec: ModelSpec, device: str) -> tuple[Any, Callable, str, str]:
    import open_clip

    if not open_clip.get_pretrained_cfg(name, spec.pretrained):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ClipcovError(f"{spec.pretrained!r} is neither a file nor a pretrained tag of {name} (tags: {tags})")
    model, preprocess = _create(name, spec, device, spec.pretrained)
    return model, preprocess, spec.pretrained, file_sha256(_tag_file(name, spec.pretrained))


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load the proxy CLIP of ``spec`` in eval mode; bad input raises :class:`ClipcovError`."""
    import open_clip
    import torch

    device = resolve_device(spec.device)
    name = resolve_architecture(spec)
    source = _from_random if spec.random_init else _from_file if spec.pretrained_is_path else _from_tag
    model, preprocess, pretrained, fingerprint = source(name, spec, device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return LoadedModel(model=model, preprocess=preprocess, tokenizer=tokenizer, name=name,
                       weights_fingerprint=fingerprint, pretrained=pretrained, device=device,
                       precision=spec.precision, dim=dim)
