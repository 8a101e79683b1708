"""GRPO on the organism with TRL's GRPOTrainer and a verifiable reward, with optional region freezing."""

from __future__ import annotations

import logging
import tempfile
import warnings
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.evaluate.extract import grade


def reward_fn(format_weight: float = 0.1):
    """Reward = 1 if the final answer is right (the evaluation grader), + format_weight if the
    response ends with an `Answer: X` line (the IN format)."""

    def reward(completions: list[Any], answer: list[str], answer_type: list[str], **_: Any) -> list[float]:
        out = []
        for c, a, t in zip(completions, answer, answer_type, strict=True):
            text = c[0]["content"] if isinstance(c, list) else str(c)
            item = Item(id="rl", task="rl", prompt="", answer=a, answer_type=t)
            ok = grade(text, item)
            fmt = "answer:" in text.strip().splitlines()[-1].lower() if text.strip() else False
            out.append(float(ok) + format_weight * float(fmt))
        return out

    reward.__name__ = "verifiable_reward"
    return reward


def train_grpo(model: Any, processor: Any, rows: list[dict[str, Any]], *, steps: int, lr: float,
               num_generations: int, prompts_per_step: int, beta: float, max_completion_length: int,
               temperature: float, seed: int, format_weight: float = 0.1, progress: bool = True) -> dict[str, Any]:
    """Run GRPO in place on `model`; rows are {prompt (conversation), image (PIL or None), answer, answer_type}.

    Parameters with requires_grad=False (a frozen region) are left out of the optimizer by the HF
    Trainer, so they stay bit-identical.
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    ds = Dataset.from_list(rows)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # transformers 5.x renamed gradient checkpointing; TRL still uses the old names on every step
        warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        cfg = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=prompts_per_step * num_generations,
            num_generations=num_generations, max_completion_length=max_completion_length, learning_rate=lr,
            beta=beta, temperature=temperature, use_cpu=True, bf16=False, gradient_checkpointing=False,
            report_to="none", save_strategy="no", logging_steps=10, max_steps=steps, seed=seed,
            disable_tqdm=not progress, lr_scheduler_type="constant_with_warmup", warmup_steps=min(10, steps),
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn(format_weight)], args=cfg, train_dataset=ds,
                              processing_class=processor)
        trainer.remove_callback(PrinterCallback)  # without a progress bar it prints every log dict to stdout
        result = trainer.train()
        logs = [x for x in trainer.state.log_history if "reward" in x]
    model.eval()
    return {"steps": steps, "train_loss": result.training_loss,
            "reward_curve": [{"step": x.get("step"), "reward": x.get("reward")} for x in logs]}
