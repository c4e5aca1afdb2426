import pytest
import torch

from steerable.errors import ConfigError, IncompatibleArtifactError, InputError
from steerable.lm.builtin import load
from steerable.steer.artifact import SteeringVector, fingerprint
from steerable.steer.gguf_io import export_gguf, import_gguf

pytest.importorskip("gguf")


def test_control_vectors_round_trip_with_llama_cpps_layer_numbering(tmp_path, char_tokenizer):
    from gguf import GGUFReader

    from conftest import tiny_model

    model, tok = load()
    vec = torch.randn(4, 192)
    art = SteeringVector("mean", "add", fingerprint(model, tok), vector=vec, layers=(2, 3), strength=1.5)
    path = export_gguf(art, tmp_path / "v.gguf")
    names = sorted(t.name for t in GGUFReader(str(path)).tensors)
    assert names == ["direction.1", "direction.2"]  # our layer-l input is llama.cpp's layer l-1 output
    back = import_gguf(path, model, tok)
    assert back.layers == (2, 3) and back.info["model_hint"] == "LlamaForCausalLM"
    torch.testing.assert_close(back.vector[2:], vec[2:] * 1.5)
    assert float(back.vector[:2].abs().sum()) == 0
    with pytest.raises(ConfigError, match="layer 0"):
        export_gguf(SteeringVector("mean", "add", art.model, vector=vec, layers=(0,)), tmp_path / "x.gguf")
    with pytest.raises(IncompatibleArtifactError, match="another model"):
        import_gguf(path, tiny_model("llama", char_tokenizer), char_tokenizer)
    (tmp_path / "junk.gguf").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a GGUF"):
        import_gguf(tmp_path / "junk.gguf", model, tok)
