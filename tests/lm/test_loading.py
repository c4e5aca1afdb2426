import pytest
import torch

from steerable.errors import ConfigError, ModelLoadError
from steerable.lm.loading import load_model, resolve_device, resolve_dtype


def test_missing_path_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_directory_without_a_model_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="not a transformers model directory"):
        load_model(str(tmp_path))


def test_non_causal_model_is_rejected(tmp_path, char_tokenizer):
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(
        DistilBertConfig(vocab_size=len(char_tokenizer), dim=16, hidden_dim=32, n_layers=1, n_heads=2)
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not a causal LM"):
        load_model(str(tmp_path))


def test_a_saved_tiny_model_loads_in_the_dtype_asked(tmp_path, char_tokenizer):
    from conftest import tiny_model

    tiny_model("qwen2", char_tokenizer).save_pretrained(tmp_path)
    char_tokenizer.save_pretrained(tmp_path)
    model, tok = load_model(str(tmp_path), device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not model.training
    assert tok.pad_token_id == char_tokenizer.pad_token_id


def test_bad_device_and_dtype():
    with pytest.raises(ConfigError):
        resolve_dtype("float8")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
