"""Thin ``transformers.Trainer`` subclasses for ICAE and SimpleLLM.

``ICAETrainer``: the loss comes from the model's own forward (it knows its layouts); checkpoints hold only the trained
tensors plus the resolved config (``save_pretrained``), and resume loads them back strictly; each ``checkpoint-N`` is
written into a staging directory and renamed into place once complete, so a run killed while saving leaves no
half-written checkpoint for ``resume_from_checkpoint`` to pick up.

``PretrainingTrainer`` adds what pretraining logs: AE and LM losses separately, tokens/s, and held-out AE loss,
BLEU-1 and exact match (greedy reconstruction) at each evaluation.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from transformers import Trainer, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, rotate_checkpoints

from icae.config import Config, ConfigError, load_config
from icae.errors import UserError
from icae.models.checkpoint import CONFIG_NAME, check_same_meaning
from icae.models.memory import CompressorOutput
from icae.training.evaluation import evaluate_pretraining
from icae.utils.io import disk_full, is_disk_full

STAGING = ".staging"


def resolve_resume(config: Config, output_dir: str) -> str | None:
    """The checkpoint a run continues from, as the original tool decides it, with the recipe checked.

    ``resume_from_checkpoint``: true -> the latest ``checkpoint-N`` in ``output_dir`` (none: start fresh); a path ->
    that checkpoint. Unset -> the latest checkpoint too, unless ``overwrite_output_dir`` is true; and an ``output_dir``
    that holds files but no checkpoint is refused unless ``overwrite_output_dir`` is true (nothing is trained over
    silently). A checkpoint whose saved config differs from this run on a key that changes what its tensors mean is
    refused; other differences (logging, evaluation cadence, ...) are listed.
    """
    from transformers.trainer_utils import get_last_checkpoint

    value, out = config.training.resume_from_checkpoint, Path(output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if value is True or value == "true":
        chosen = last
    elif value:
        if not Path(value).is_dir():
            raise ConfigError([f"resume_from_checkpoint: no such checkpoint directory: {value}"], "training config")
        chosen = str(value)
    elif config.training.overwrite_output_dir or not out.is_dir():
        chosen = None
    elif last is not None:
        chosen = last
        print(f"resuming from {last} (found in output_dir); set overwrite_output_dir: true to train from scratch")
    elif any(p.name != STAGING for p in out.iterdir()):
        raise ConfigError([f"output_dir {out} already holds files but no checkpoint to resume: choose another "
                           "output_dir, or set overwrite_output_dir: true to train into it"], "training config")
    else:
        chosen = None
    if chosen is not None:
        check_resumable(config, chosen)
    return chosen


def check_resumable(config: Config, checkpoint_dir: str) -> None:
    """Refuse to resume with a recipe whose trained tensors would mean something else; list the harmless changes."""
    saved_path = Path(checkpoint_dir) / CONFIG_NAME
    if not saved_path.is_file():
        return
    saved = load_config(saved_path)
    check_same_meaning(saved, config, f"checkpoint {checkpoint_dir}")
    old, new = saved.to_dict(), config.to_dict()
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and k not in ("resume_from_checkpoint", "restore_from")]
    if changed:
        print(f"resuming {checkpoint_dir} with changed keys (none changes what its tensors mean): " + "; ".join(changed))


TRAINER_STATE = "trainer_state.json"


def finished_state(checkpoint_dir: str, max_steps: int) -> TrainerState | None:
    """The saved trainer state of ``checkpoint_dir`` when it already holds the whole run (its step is at least
    ``max_steps``, or, with ``max_steps`` -1, the step budget the run computed), else None."""
    path = Path(checkpoint_dir) / TRAINER_STATE
    if not path.is_file():
        return None
    state = TrainerState.load_from_json(str(path))
    budget = max_steps if max_steps > 0 else state.max_steps
    return state if budget and state.global_step >= budget else None


class ICAETrainer(Trainer):
    def __init__(self, *args, icae_config: Config | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.icae_config = icae_config
        self._staging = False

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``, except that a checkpoint that already holds the whole run (killed after its last
        checkpoint, or a finished run started again) is loaded as it is: the trainer's own resume would take one more
        step past ``max_steps``, changing the final weights and metrics."""
        if isinstance(resume_from_checkpoint, str):
            state = finished_state(resume_from_checkpoint, self.args.max_steps)
            if state is not None:
                print(f"{resume_from_checkpoint} already holds all {state.global_step} steps: loading it, not training")
                self._load_from_checkpoint(resume_from_checkpoint)
                self.state = state
                losses = [h["loss"] for h in state.log_history if "loss" in h]
                return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else 0.0, {})
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out: CompressorOutput = model(**inputs)
        return (out.loss, out) if return_outputs else out.loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir, self.icae_config)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self.accelerator.unwrap_model(model or self.model).load_checkpoint(resume_from_checkpoint)

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)  # every rank writes its part under run_dir/.staging/checkpoint-N
        except Exception as e:  # torch.save and safetensors word a full disk in their own ways
            if isinstance(e, UserError) or is_disk_full(e):  # the half-written checkpoint goes; the last one stays
                shutil.rmtree(os.path.join(run_dir, STAGING, name), ignore_errors=True)
                if not isinstance(e, UserError):
                    raise disk_full(os.path.join(run_dir, name), e) from None
            raise
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            staged, final = os.path.join(run_dir, STAGING, name), os.path.join(run_dir, name)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staged, final)
            if self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(f"{STAGING}{os.sep}", "")
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()


class PretrainingTrainer(ICAETrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reset_meters()

    def _reset_meters(self) -> None:
        # Sums stay tensors until a log is written: reading them every step would sync the GPU every step.
        self._meter: dict[str, list] = {}
        self._tokens = 0
        self._since = time.perf_counter()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out: CompressorOutput = model(**inputs)
        modes = inputs["mode"]
        for m, value in (out.mode_losses or {}).items():
            n = sum(1 for x in modes if x == m)
            total = self._meter.setdefault(m, [0, 0])
            total[0] = total[0] + value.detach() * n
            total[1] += n
        # Tokens processed: encoder contexts plus decoder targets (padding excluded).
        self._tokens = self._tokens + inputs["attention_mask"].sum() + out.num_target_tokens
        return (out.loss, out) if return_outputs else out.loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the per-objective losses and throughput since the last one
            for m, (total, n) in self._meter.items():
                logs[f"{m}_loss"] = float(total) / n
            logs["tokens_per_second"] = float(self._tokens) / max(time.perf_counter() - self._since, 1e-9)
            self._reset_meters()
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        started = time.perf_counter()
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        pre = self.icae_config.pretrain
        model = self.accelerator.unwrap_model(self.model)
        metrics = evaluate_pretraining(
            model,
            list(dataset),
            batch_size=self.args.per_device_eval_batch_size,
            num_generate=pre.eval_ae_num_samples,
            leave_tokens_for_lm=pre.leave_tokens_for_lm,
            min_tokens_for_lm=pre.min_tokens_for_lm,
        )
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        self._since += time.perf_counter() - started  # tokens/s measures training, not evaluation
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
