"""Fine-tune SAM 3 on your own labelled data: ``sam3studio finetune`` and `finetune`.

>>> from sam3studio.finetune import FinetuneConfig, finetune                        # doctest: +SKIP
>>> result = finetune("train.json", "val.json", images="images/", model="facebook/sam3",
...                   out="sam3-cells", config=FinetuneConfig(train="heads", epochs=20))  # doctest: +SKIP
>>> result.report["gain"]["mask AP"], result.improved                              # doctest: +SKIP

The output folder is a checkpoint of the source's own architecture and dtype (``load_segmenter(out)``,
``--model out``) with ``report.json`` (``before`` / ``after`` as ``sam3studio eval`` reports them),
``report.md`` and ``training_curves.png``. See docs/finetune.md.
"""

from __future__ import annotations

from sam3studio.finetune.config import DEFAULT_LR, TRAIN_MODES, FinetuneConfig, FinetuneConfigError
from sam3studio.finetune.data import FinetuneDataError, load_training_data
from sam3studio.finetune.loss import LossWeights, SetLoss
from sam3studio.finetune.pipeline import OutputFolderError, finetune
from sam3studio.finetune.train import FinetuneEvent, FinetuneResult

__all__ = [
    "DEFAULT_LR",
    "TRAIN_MODES",
    "FinetuneConfig",
    "FinetuneConfigError",
    "FinetuneDataError",
    "FinetuneEvent",
    "FinetuneResult",
    "LossWeights",
    "OutputFolderError",
    "SetLoss",
    "finetune",
    "load_training_data",
]
