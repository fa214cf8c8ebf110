"""Self-describing model checkpoints: a directory with ``config.json`` + ``model.safetensors``.

``config.json`` holds everything needed to rebuild the model from the path
alone: the model type, the :class:`MambaConfig`, the tokenizer vocabulary and
version, the package version, and free-form ``extra`` metadata (label map of a
classifier, training provenance). Weights are safetensors, never pickles.

A *run directory* (from ``pretrain`` / ``finetune``) holds ``best/`` and
``last/`` model directories; :func:`resolve_model_dir` maps a run directory to
its best model. Writes are atomic (:func:`mamba_genome.outputs.atomic_dir`): a
killed process never leaves a directory that looks complete but is not, and
the files get the umask-derived modes, so a lab's other users can read them.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError
from .model.config import MambaConfig
from .outputs import atomic_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

# model_type -> "module:Class"; classes take (config, **extra_init) and expose `.config`.
MODEL_TYPES = {
    "lm": "mamba_genome.model.lm:MambaLM",
    "classifier": "mamba_genome.model.classifier:MambaClassifier",
}


def _model_class(model_type: str):
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"unknown model_type {model_type!r} in {CONFIG_NAME}; known: {', '.join(MODEL_TYPES)}")
    mod, cls = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(mod), cls)


def _tokenizer_meta() -> dict:
    from .data import tokenizer

    return {"version": tokenizer.TOKENIZER_VERSION, "vocab": list(tokenizer.VOCAB)}


def model_meta(model: torch.nn.Module, extra: dict | None = None, init_kwargs: dict | None = None) -> dict:
    """The ``config.json`` of ``model`` (a model on any device, the meta device included)."""
    return {
        "format_version": FORMAT_VERSION,
        "model_type": getattr(model, "model_type", "lm"),
        "mamba_genome_version": __version__,
        "config": model.config.to_dict(),
        "init_kwargs": init_kwargs or {},
        "tokenizer": _tokenizer_meta(),
        "num_parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "extra": extra or {},
    }


def host_copy(obj):
    """``obj`` (nested dicts / lists / tuples) with every tensor replaced by a detached copy in host
    memory, a point-in-time snapshot; tensors that share storage stay one shared tensor."""
    seen: dict[tuple, torch.Tensor] = {}

    def copy(t: torch.Tensor) -> torch.Tensor:
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) if t.numel() else None
        if key is not None and key in seen:
            return seen[key]
        out = t.detach().to("cpu", copy=True)
        if key is not None:
            seen[key] = out
        return out

    def walk(o):
        if isinstance(o, torch.Tensor):
            return copy(o)
        if isinstance(o, dict):
            out = o.copy()      # keeps OrderedDict / defaultdict
            for k, v in out.items():
                out[k] = walk(v)
            return out
        if isinstance(o, (list, tuple)) and not hasattr(o, "_fields"):
            return type(o)(walk(v) for v in o)
        return o

    return walk(obj)


def host_weights(state: dict) -> dict:
    """``{name: tensor}`` to write: :func:`host_copy` of ``state``, each tied tensor once (re-tied on load)."""
    out, seen = {}, set()
    for name, t in host_copy(dict(state)).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t.contiguous()
    return out


def write_model_dir(weights: dict, meta: dict, path) -> Path:
    """Write ``config.json`` (``meta``) and ``model.safetensors`` (``weights``, host tensors from
    :func:`host_weights`) to directory ``path`` atomically. Returns the path."""
    path = Path(path)
    with atomic_dir(path) as tmp:  # umask-derived modes; the old model stays until the new one is complete
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model_type": meta["model_type"]})
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def save_model(model: torch.nn.Module, path, extra: dict | None = None, init_kwargs: dict | None = None) -> Path:
    """Write ``model`` to directory ``path`` atomically. Returns the path.

    ``init_kwargs`` are JSON-serialisable constructor arguments besides the
    config (e.g. ``num_classes`` of a classifier); ``extra`` is free metadata.
    """
    return write_model_dir(host_weights(model.state_dict()), model_meta(model, extra, init_kwargs), path)


def resolve_model_dir(path) -> Path:
    """A model directory, or a run directory -> its ``best`` (else ``last``) model."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"model path {path} is not a directory (expected a model or run directory)")
    for cand in (path, path / "best", path / "last", path / "model"):
        if (cand / CONFIG_NAME).is_file():
            if not (cand / WEIGHTS_NAME).is_file():
                raise CheckpointError(f"{cand} has {CONFIG_NAME} but no {WEIGHTS_NAME}: the checkpoint is incomplete")
            return cand
    raise CheckpointError(
        f"{path} is not a model directory: no {CONFIG_NAME} in it or in best/ or last/ "
        "(pass a directory written by `mamba-genome pretrain` or `finetune`)")


def model_dir_or_none(path) -> Path | None:
    """The model directory ``path`` resolves to, or None if it is not one (for output collision checks)."""
    try:
        return resolve_model_dir(path)
    except CheckpointError:
        return None


def read_meta(path) -> dict:
    """The checkpoint's ``config.json`` as a dict, or a one-line ``CheckpointError``.

    Catches what a damaged or foreign file can raise: unreadable, not UTF-8
    (``UnicodeDecodeError``), not JSON, not a JSON object, or missing or
    wrongly typed ``config``/``model_type``/``init_kwargs``.
    """
    d = resolve_model_dir(path)
    f = d / CONFIG_NAME
    try:
        text = f.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CheckpointError(f"{f} cannot be read ({exc.strerror}); check its permissions") from None
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{f} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
                              "the file is corrupt or not a mamba-genome checkpoint") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or "config" not in meta or "model_type" not in meta:
        raise CheckpointError(f"{f} lacks 'config'/'model_type': not a mamba-genome checkpoint")
    if not isinstance(meta["config"], dict) or not isinstance(meta.get("init_kwargs", {}), dict) \
            or not isinstance(meta["model_type"], str):
        raise CheckpointError(f"{f}: 'config' and 'init_kwargs' must be objects and 'model_type' a string; "
                              "the file is corrupt or not a mamba-genome checkpoint")
    return meta


def load_model(path, device=None, runtime=None, **config_overrides):
    """Rebuild a model from a model/run directory. Returns (model, meta), model in eval mode.

    ``runtime``: the :class:`~mamba_genome.model.runtime.RuntimeOptions` to execute with (default
    ones otherwise); run-time fields among ``config_overrides`` (``scan_backend="torch"``) are
    applied to it. Run-time fields in an older ``config.json`` are ignored: they are not the
    architecture.
    """
    from .model.runtime import RuntimeOptions, split_runtime

    d = resolve_model_dir(path)
    meta = read_meta(d)
    arch_overrides, rt_overrides = split_runtime(config_overrides)
    try:
        config = MambaConfig.from_dict({**meta["config"], **arch_overrides})
        runtime = (runtime or RuntimeOptions()).replace(**rt_overrides)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{d / CONFIG_NAME}: bad model config ({exc})") from None
    cls = _model_class(meta["model_type"])
    # built on the target device and filled from weights read straight onto it: the random
    # initialisation that the weights replace runs there (on the host it took 0.13 s of a 7m
    # load in a cProfile on an H200 machine, 2026-12-02), and no second copy is made
    dev = torch.device(device) if device is not None else torch.device("cpu")
    try:
        with dev:
            model = cls(config, runtime=runtime, **meta.get("init_kwargs", {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{d / CONFIG_NAME}: bad init_kwargs for a {meta['model_type']} model ({exc})") from None
    try:
        state = load_file(str(d / WEIGHTS_NAME), device=str(dev))
    except Exception as exc:  # safetensors raises several types on corrupt files
        raise CheckpointError(f"{d / WEIGHTS_NAME} could not be read ({exc}); the file is corrupt or truncated") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {n for n, p in model.named_parameters(remove_duplicate=False)} - set(state)
    missing = [m for m in missing if m not in tied or not _is_tied(model, m)]
    if missing or unexpected:
        raise CheckpointError(f"{d / WEIGHTS_NAME} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    if device is not None:
        model.to(device)   # a no-op unless a module made a tensor outside the device context
    return model, meta


def _is_tied(model, name: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    return p is not None and sum(q is p for q in params.values()) > 1
