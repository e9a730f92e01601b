"""Model loading: sources, errors that say what to do, device and dtype resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import sam3studio.model as model_mod
from sam3studio import load_segmenter
from sam3studio.errors import ModelSourceError
from sam3studio.model import hub_login_command, load_model, resolve_device, resolve_dtype
from sam3studio.testing import make_tiny_checkpoint


def test_tiny_checkpoint_is_a_complete_transformers_directory(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert json.loads((tiny_checkpoint / "config.json").read_text())["model_type"] == "sam3"


def test_same_seed_gives_same_weights_and_other_seed_differs(tmp_path):
    a = load_model(str(make_tiny_checkpoint(tmp_path / "a", seed=1)), device="cpu", dtype="float32").model
    b = load_model(str(make_tiny_checkpoint(tmp_path / "b", seed=1)), device="cpu", dtype="float32").model
    c = load_model(str(make_tiny_checkpoint(tmp_path / "c", seed=2)), device="cpu", dtype="float32").model
    wa, wb, wc = (m.text_projection.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_lite_text_checkpoint_is_dispatched_by_its_config(tmp_path, cat_photo):
    path = make_tiny_checkpoint(tmp_path / "lite", architecture="sam3_lite_text")
    assert json.loads((path / "config.json").read_text())["model_type"] == "sam3_lite_text"
    seg = load_segmenter(str(path), device="cpu", dtype="float32")
    assert seg.info()["architecture"] == "Sam3LiteTextModel"
    assert type(seg.model).__name__ == "Sam3LiteTextModel"
    result = seg.segment(cat_photo, "cat, dog", score_threshold=0.05)
    assert len(result) > 0 and [p.text for p in result.prompts] == ["cat", "dog"]


def test_load_segmenter_reports_what_it_loaded(tiny_checkpoint):
    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    assert seg.info() == {"source": str(tiny_checkpoint), "architecture": "Sam3Model", "device": "cpu",
                          "dtype": "float32", "compiled": "eager"}
    assert next(seg.model.parameters()).dtype == torch.float32


def test_tokenizer_tells_prompts_apart(tiny_checkpoint):
    seg = load_segmenter(str(tiny_checkpoint), device="cpu")
    tok = seg.processor.tokenizer
    assert type(tok).__name__ == "CLIPTokenizer"
    assert tok("red car")["input_ids"] != tok("blue car")["input_ids"]
    assert len(tok("红色的汽车")["input_ids"]) > 2  # any text tokenizes, byte by byte


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"), device="cpu")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_model(str(tmp_path), device="cpu")


def test_checkpoint_of_another_model_type_is_rejected(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelSourceError, match="not a SAM 3 detector"):
        load_model(str(tmp_path), device="cpu")


def test_unreachable_hub_checkpoint_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = "from sam3studio.model import load_model; load_model('facebook/sam3', device='cpu')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ModelSourceError" in proc.stderr
    for hint in (hub_login_command(), "modelscope:facebook/sam3", "--model /path/to/dir", "--model random"):
        assert hint in proc.stderr


def test_the_login_command_named_exists():
    """The advice names the login command of the installed huggingface_hub, and that command answers --help."""
    command = hub_login_command()
    assert command == "hf auth login"  # huggingface_hub >= 1 (our pin) ships `hf`, not `huggingface-cli`
    exe = os.path.join(os.path.dirname(sys.executable), command.split()[0])
    proc = subprocess.run([exe, *command.split()[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "login" in proc.stdout.lower()


def test_modelscope_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # import fails as if not installed
    with pytest.raises(ModelSourceError, match="pip install"):
        load_model("modelscope:facebook/sam3", device="cpu")


@pytest.mark.parametrize("flags, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_follows_bf16_support(monkeypatch, flags, expected):
    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: flags)
    assert resolve_dtype("auto", torch.device("cpu")) == expected


def test_cpu_flag_reading_matches_proc_cpuinfo():
    text = open("/proc/cpuinfo").read() if sys.platform.startswith("linux") else ""
    expected = "amx_bf16" in text or "avx512_bf16" in text
    assert model_mod.cpu_supports_bf16() == expected


@pytest.mark.parametrize("name, expected", [("float32", torch.float32), ("bf16", torch.bfloat16),
                                            ("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_explicit_dtypes(name, expected):
    assert resolve_dtype(name, torch.device("cpu")) == expected


def test_bad_dtype_and_device_are_clear_errors():
    with pytest.raises(ModelSourceError, match="unknown dtype"):
        resolve_dtype("int7", torch.device("cpu"))
    with pytest.raises(ModelSourceError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ModelSourceError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto").type in ("cpu", "mps")


def test_loading_does_not_touch_global_torch_state(tiny_checkpoint):
    before = (torch.get_default_dtype(), torch.is_autocast_enabled("cpu"), torch.is_grad_enabled())
    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    seg.segment(__import__("numpy").zeros((32, 48, 3), "uint8"), "cat", score_threshold=0.5)
    assert (torch.get_default_dtype(), torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()) == before


def test_importing_the_package_does_not_import_torch():
    code = "import sys, sam3studio, sam3studio.results, sam3studio.prompts; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_random_source_builds_the_full_size_architecture_with_a_warning():
    with pytest.warns(UserWarning, match="UNTRAINED"):
        loaded = load_model("random", device="cpu", dtype="bfloat16")
    n_params = sum(p.numel() for p in loaded.model.parameters())
    assert 800e6 < n_params < 900e6
    assert loaded.processor.image_processor.size["height"] == 1008
    assert loaded.dtype == torch.bfloat16


@pytest.mark.slow
def test_compiled_vision_encoder_gives_the_eager_results(tiny_checkpoint, cat_photo):
    """`compile=True` (torch.compile of the vision encoder, inductor on the CPU) changes speed, not results."""
    eager = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    compiled = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", compile=True)
    assert compiled.info()["compiled"] != "eager" and eager.info()["compiled"] == "eager"
    assert type(compiled.model.vision_encoder).__name__ == type(eager.model.vision_encoder).__name__  # compiled in place
    ours = compiled.segment(cat_photo, "cat, dog", score_threshold=0.05)
    ref = eager.segment(cat_photo, "cat, dog", score_threshold=0.05)
    assert len(ref) > 0 and len(ours) == len(ref)
    np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-4)
    np.testing.assert_allclose(ours.boxes, ref.boxes, atol=1e-2)
    assert all((a != b).mean() < 1e-3 for a, b in zip(ours.masks, ref.masks, strict=True))
