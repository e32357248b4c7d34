"""Run by test_pretraining under `accelerate launch` with 2 processes: records which samples each rank saw and a digest
of its trained tensors, so the test can check data parallelism (different data, identical weights)."""

import hashlib
import json
import sys
from pathlib import Path

from icae.config import config_from_cli
from icae.data import collators
from icae.scripts import close_process_group, pretrain

seen: list[int] = []
_collate = collators.PretrainingCollator.__call__


def _recording(self, features):
    seen.extend(int(f["sample_id"]) for f in features)
    return _collate(self, features)


collators.PretrainingCollator.__call__ = _recording


def digest(model) -> dict:
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for k, v in model.trainable_state_dict().items()}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    trainer = pretrain.build_trainer(config_from_cli(sys.argv[2:]))
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = digest(model)
    trainer.train()
    rank = trainer.args.process_index
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"world": trainer.args.world_size, "seen": seen, "before": before, "after": digest(model)}))
    close_process_group()
