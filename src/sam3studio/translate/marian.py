"""`MarianTranslator`: free-form Chinese sentences through a local MarianMT model (e.g. Opus-MT zh-en).

The model directory must already be on disk (``save_pretrained`` output, or a downloaded
``Helsinki-NLP/opus-mt-zh-en``): it is loaded with ``local_files_only=True`` and nothing is
downloaded. Opus-MT checkpoints use SentencePiece tokenizers (``pip install sentencepiece``);
a directory with a ``tokenizer.json`` loads without it.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from sam3studio.errors import ModelSourceError
from sam3studio.prompts import Translation
from sam3studio.translate.lexicon_translator import CJK_RE, contains_cjk

__all__ = ["MarianTranslator"]

_CJK_RUN = re.compile(CJK_RE.pattern + "+")


class MarianTranslator:
    """Translate prompts containing CJK text with a local MarianMT model; English passes through.

    The model loads lazily, once, on the first Chinese prompt (thread-safe); `load` loads it now.
    Characters the model leaves untranslated (CJK in its output) are removed from the query and
    reported in ``Translation.unknown``.
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", max_new_tokens: int = 32, num_beams: int = 1) -> None:
        self.model_dir = Path(model_dir).expanduser()
        if not self.model_dir.is_dir():
            raise ModelSourceError(
                f"translation model directory '{model_dir}' does not exist: point --translator at a local MarianMT "
                "model folder (for example Helsinki-NLP/opus-mt-zh-en saved with save_pretrained), or use 'lexicon'"
            )
        if not (self.model_dir / "config.json").is_file():
            raise ModelSourceError(f"'{model_dir}' has no config.json: it is not a transformers model folder "
                                   "(expected MarianMT files saved with save_pretrained)")
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> MarianTranslator:
        if self._model is not None:
            return self
        with self._lock:
            if self._model is not None:
                return self
            try:
                from transformers import AutoTokenizer, MarianMTModel

                tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
                model = MarianMTModel.from_pretrained(str(self.model_dir), local_files_only=True)
            except ImportError as exc:
                raise ModelSourceError(f"cannot load the translation model in '{self.model_dir}': {exc} "
                                       "(Opus-MT tokenizers need: pip install sentencepiece)") from exc
            except (OSError, ValueError, KeyError) as exc:
                raise ModelSourceError(f"cannot load a MarianMT model from '{self.model_dir}': {exc}") from exc
            model.to(self.device).eval()
            self._tokenizer = tokenizer
            self._model = model
        return self

    def __call__(self, text: str) -> Translation:
        if not contains_cjk(text):
            return Translation(query=text)
        self.load()
        import torch

        batch = self._tokenizer([text], return_tensors="pt", padding=True, truncation=True, max_length=128)
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = self._model.generate(**batch, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                       do_sample=False)
        english = self._tokenizer.decode(out[0], skip_special_tokens=True)
        left = list(dict.fromkeys(m.group(0) for m in _CJK_RUN.finditer(english)))
        query = " ".join(CJK_RE.sub(" ", english).split()).strip(" .。")
        return Translation(query=query, unknown=tuple(left))
