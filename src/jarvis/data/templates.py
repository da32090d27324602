"""Chat templates as Jinja strings for ``tokenizer.chat_template``.

Four templates, named as in the reference (aimagelab/JARVIS ``src/models/conversations.py``):

- ``plain``     stage 1 (paper-spec §5, §11.1 item 8): ``<image>`` + caption. No BOS, no EOS, no separator;
                the human instruction is ignored, as the reference does.
- ``vicuna_v1`` LLaVA-1.5 stage 2 (paper-spec §9): ``<s>SYSTEM USER: {q} ASSISTANT: {a}</s>USER: ...``;
                ``<image>`` is rewritten to ``<image>▁`` (U+2581) exactly as the reference/Cambrian harness does.
- ``qwen2``     ChatML with the default system prompt "You are a helpful assistant.".
- ``mistral``   ``<s>[INST] {q} [/INST] {a}</s>[INST] ...`` (LLaVA's LLAMA_2 separator style, empty system).

Every template wraps the supervised part of each assistant turn (answer + end marker) in
``{% generation %}...{% endgeneration %}`` so that ``apply_chat_template(..., return_assistant_tokens_mask=True)``
yields the label mask (transformers marks every token that overlaps such a span). A generation block always starts
at the first character of the answer and ends on a non-whitespace character (the end marker), so that tokenizers
which drop whitespace (WordLevel + Whitespace) still map both ends to tokens.

The rendered generation prompts equal the Cambrian eval prompts of benchmarks-spec §1 (for ``vicuna_v1`` preceded by
``bos_token``: the harness tokenises the prompt with BOS; we render it so that ``apply_chat_template`` gives the same
ids without ``add_special_tokens``).
"""

from __future__ import annotations

from typing import Final

VICUNA_SYSTEM: Final = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QWEN2_SYSTEM: Final = "You are a helpful assistant."
IMAGE_TOKEN: Final = "<image>"
# The Vicuna template of the reference appends U+2581 to the image placeholder (benchmarks-spec §1).
VICUNA_IMAGE_SUFFIX: Final = "\u2581"

# Marker comment at the top of each template so that the template name can be recovered from a saved tokenizer.
_MARK = "{#- jarvis-template: %s -#}"

# A role other than user/assistant/system (or a system message anywhere but first) is a bug in the caller.
_RAISE_ROLE = "{{- raise_exception('jarvis template: unsupported role ' ~ message['role']) -}}"

_PLAIN = (
    _MARK % "plain"
    # The reference builds `<image>` + conversations[1] and drops the instruction (benchmarks-spec §5.3): only the
    # first exchange is rendered, so a multi-turn sample cannot glue several captions together.
    + "{%- set ns = namespace(user=false, assistant=false) -%}"
    + "{%- for message in messages -%}"
    + "{%- if message['role'] == 'user' -%}"
    + "{%- if not ns.user and '<image>' in message['content'] -%}{{- '<image>' -}}{%- endif -%}"
    + "{%- set ns.user = true -%}"
    + "{%- elif message['role'] == 'assistant' -%}"
    + "{%- if not ns.assistant -%}{% generation %}{{- message['content'] -}}{% endgeneration %}{%- endif -%}"
    + "{%- set ns.assistant = true -%}"
    + "{%- elif message['role'] != 'system' -%}"
    + _RAISE_ROLE
    + "{%- endif -%}"
    + "{%- endfor -%}"
)

_VICUNA_V1 = (
    _MARK % "vicuna_v1"
    + "{%- if messages[0]['role'] == 'system' -%}"
    + "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
    + "{%- else -%}"
    + "{%- set system = '"
    + VICUNA_SYSTEM.replace("'", "\\'")
    + "' -%}{%- set loop_messages = messages -%}"
    + "{%- endif -%}"
    + "{{- bos_token if bos_token else '' -}}{{- system + ' ' -}}"
    + "{%- for message in loop_messages -%}"
    + "{%- set content = message['content'] | replace('<image>', '<image>"
    + VICUNA_IMAGE_SUFFIX
    + "') -%}"
    + "{%- if message['role'] == 'user' -%}{{- 'USER: ' + content + ' ' -}}"
    + "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' -}}"
    + "{% generation %}{{- content + eos_token -}}{% endgeneration %}"
    + "{%- else -%}"
    + _RAISE_ROLE
    + "{%- endif -%}"
    + "{%- endfor -%}"
    # LLaVA's TWO style renders the open assistant role as 'ASSISTANT:' (no trailing space).
    + "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

_QWEN2 = (
    _MARK % "qwen2"
    + "{%- if messages[0]['role'] == 'system' -%}"
    + "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
    + "{%- else -%}"
    + "{%- set system = '"
    + QWEN2_SYSTEM
    + "' -%}{%- set loop_messages = messages -%}"
    + "{%- endif -%}"
    + "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}"
    + "{%- for message in loop_messages -%}"
    + "{%- if message['role'] == 'user' -%}"
    + "{{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' -}}"
    + "{%- elif message['role'] == 'assistant' -%}{{- '<|im_start|>assistant\\n' -}}"
    + "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    + "{%- else -%}"
    + _RAISE_ROLE
    + "{%- endif -%}"
    + "{%- endfor -%}"
    + "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_MISTRAL = (
    _MARK % "mistral"
    + "{{- bos_token if bos_token else '' -}}"
    + "{%- for message in messages -%}"
    + "{%- if message['role'] == 'user' -%}{{- '[INST] ' + message['content'] + ' [/INST]' -}}"
    + "{%- elif message['role'] == 'assistant' -%}{{- ' ' -}}"
    + "{% generation %}{{- message['content'] + eos_token -}}{% endgeneration %}"
    + "{%- elif message['role'] != 'system' -%}"
    + _RAISE_ROLE
    + "{%- endif -%}"
    + "{%- endfor -%}"
)

TEMPLATES: Final[dict[str, str]] = {
    "plain": _PLAIN,
    "vicuna_v1": _VICUNA_V1,
    "qwen2": _QWEN2,
    "mistral": _MISTRAL,
}

# Tokens each template needs as single ids (in addition to <image> and the tokenizer's own BOS/EOS).
REQUIRED_TOKENS: Final[dict[str, tuple[str, ...]]] = {
    "plain": (),
    "vicuna_v1": (),
    "qwen2": ("<|im_start|>", "<|im_end|>"),
    "mistral": ("[INST]", "[/INST]"),
}

# Fixed text each template renders (for tokenizer corpora, so that the tiny tokenizer learns these strings).
FIXED_TEXTS: Final[dict[str, tuple[str, ...]]] = {
    "plain": (),
    "vicuna_v1": (VICUNA_SYSTEM, "USER:", "ASSISTANT:", VICUNA_IMAGE_SUFFIX + "\n"),
    "qwen2": ("system\n" + QWEN2_SYSTEM, "user\n", "assistant\n"),
    "mistral": ("[INST] ", " [/INST] "),
}


def get_template(name: str) -> str:
    """The Jinja chat template called ``name``; raises ``KeyError`` listing the known names."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown chat template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def template_name(chat_template: str | None) -> str | None:
    """Recover the name of one of our templates from its text (``None`` for a foreign or missing template)."""
    if not chat_template:
        return None
    for name in TEMPLATES:
        if chat_template.startswith(_MARK % name):
            return name
    return None
