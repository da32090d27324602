"""`jarvis chat`: one greedy answer from a trained checkpoint, for a quick look (not a pipeline stage)."""

from __future__ import annotations

from pathlib import Path

import torch


def answer(checkpoint: Path, image: Path | None, question: str, max_new_tokens: int = 64) -> str:
    from jarvis.data.collate import Collator
    from jarvis.data.conversation import build_prompt, expand_image_token, image_token_id
    from jarvis.data.images import load_rgb
    from jarvis.stages.common import image_transform
    from jarvis.stages.evaluate import load_checkpoint

    model, tokenizer = load_checkpoint(checkpoint)
    ids = build_prompt(tokenizer, question, with_image=image is not None)
    sample: dict = {"labels": None}
    if image is not None:
        if not image.is_file():
            raise FileNotFoundError(f"image {image} does not exist")
        ids, _ = expand_image_token(ids, None, image_token_id(tokenizer), model.vision_tower.num_patches)
        sample["pixel_values"] = image_transform(model.vision_tower, "pad")(load_rgb(image))  # 16-bit, alpha
    sample["input_ids"] = torch.tensor(ids)
    sample["labels"] = torch.full((len(ids),), -100)
    batch = Collator(tokenizer.pad_token_id, padding_side="left")([sample])
    with torch.inference_mode():
        new = model.generate_greedy(batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"),
                                    max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(new[0], skip_special_tokens=True).strip()
