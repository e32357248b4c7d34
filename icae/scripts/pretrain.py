"""Pretrain an ICAE with the autoencoding and language-modelling objectives.

    python -m icae.scripts.prepare_data_for_pretraining --config_path icae/configs/pretrain_tiny_qwen2.yaml
    python -m icae.scripts.pretrain --config_path icae/configs/pretrain_tiny_qwen2.yaml
    accelerate launch --config_file icae/configs/accelerate/ddp.yaml -m icae.scripts.pretrain --config_path ...

Load config -> build the model -> load the prepared splits -> train with PretrainingTrainer (AE/LM mixed by
``lm_ratio`` or weighted by ``lambda``; checkpoints every ``save_steps``; an interrupted run resumes from its latest
checkpoint) -> evaluate on the held-out split -> save the final trained tensors and the metrics JSON.
"""

from __future__ import annotations

from pathlib import Path

from icae.config import config_from_cli
from icae.scripts import entry
from icae.training.pretraining import build_trainer
from icae.training.results import free_path, results_dir
from icae.training.trainer import resolve_resume
from icae.utils.io import atomic_write_json


def main(argv: list[str] | None = None, callbacks=None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    trainer = build_trainer(config, callbacks)
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    final = Path(trainer.args.output_dir) / "final"
    trainer.save_model(str(final))  # on every rank: it synchronises under FSDP/DeepSpeed and writes on rank 0 only
    if trainer.is_world_process_zero():
        path = free_path(results_dir(config), f"pretrain_{Path(config.model.model_name_or_path).name}")
        atomic_write_json(path, {"config": config.to_dict(), "eval": metrics, "log_history": trainer.state.log_history,
                                 "checkpoint": str(final)})
        print(f"final checkpoint: {final}\nmetrics: {path}")
    return metrics


if __name__ == "__main__":
    entry(main)
