"""llama.cpp control vectors (the GGUF files repeng writes): export a steering vector, import one.

The format: architecture ``controlvector``, keys ``controlvector.model_hint``
and ``controlvector.layer_count``, one float32 tensor ``direction.{i}`` per
steered layer, added by llama.cpp to the *output* of layer ``i`` (``i >= 1``;
``--control-vector-scaled FILE S`` multiplies it). steerable adds a vector at
the *input* of layer ``l``, which is the output of layer ``l - 1``: our layer
``l`` is GGUF ``direction.{l - 1}``. The input of layer 0 (the embeddings) and
the output of layer 0 have no counterpart on the other side, which is an
error, not a silently dropped layer. Needs the ``gguf`` package (extra ``[gguf]``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from steerable.errors import ConfigError, IncompatibleArtifactError, InputError
from steerable.steer.artifact import SteeringVector, fingerprint

ARCH = "controlvector"


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ConfigError("GGUF needs the gguf package: pip install 'steerable[gguf]'") from None
    return gguf


def export_gguf(art: SteeringVector, path: str | Path) -> Path:
    """Write ``art``'s addition (vector x strength at its layers) as a llama.cpp control vector."""
    gguf = _gguf()
    if art.vector is None:
        raise InputError(f"this {art.method} artifact holds no vector to add, so there is nothing to export")
    n = art.model["n_layers"]
    vec = art.vector if art.vector.dim() == 2 else art.vector.expand(n, -1)
    layers = art.layers if art.layers is not None else tuple(range(n))
    if 0 in layers and float(vec[0].norm()) > 0:
        raise ConfigError("llama.cpp cannot steer the input of layer 0 (the embeddings): steer layers >= 1")
    layers = tuple(layer for layer in layers if layer > 0)
    if not layers:
        raise ConfigError("no layer to export: llama.cpp control vectors steer layers >= 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_string(f"{ARCH}.model_hint", art.model.get("architecture", "unknown"))
    writer.add_uint32(f"{ARCH}.layer_count", len(layers))
    for layer in layers:
        writer.add_tensor(f"direction.{layer - 1}", (vec[layer] * art.strength).float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def import_gguf(path: str | Path, model, tokenizer, layers_path: str | None = None) -> SteeringVector:
    """A llama.cpp control vector as an addition artifact for ``model`` (strength 1)."""
    gguf = _gguf()
    path = Path(path)
    if not path.exists():
        raise InputError(f"no control vector at {str(path)!r}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises plain ValueErrors for a foreign file
        raise InputError(f"{path} is not a GGUF file ({e})") from None
    fp = fingerprint(model, tokenizer, layers_path)
    n, d = fp["n_layers"], fp["hidden_size"]
    vec = torch.zeros(n, d)
    layers = []
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        i = int(t.name.split(".", 1)[1])
        data = torch.from_numpy(t.data.copy()).float().reshape(-1)
        if data.numel() != d or not 0 <= i + 1 < n:
            raise IncompatibleArtifactError(
                f"{path} has {t.name} of size {data.numel()}; this model has hidden size {d} and "
                f"layers 0..{n - 1} (a direction.i lands on layer i+1): it belongs to another model"
            )
        vec[i + 1] = data
        layers.append(i + 1)
    if not layers:
        raise InputError(f"{path} holds no direction.N tensors: it is not a control vector")
    hint = reader.fields.get(f"{ARCH}.model_hint")
    info = {"source": str(path)}
    if hint is not None:
        info["model_hint"] = bytes(hint.parts[hint.data[0]]).decode(errors="replace")
    return SteeringVector("gguf", "add", fp, vector=vec, layers=tuple(sorted(layers)), info=info)
