"""The JARVIS model family, loadable through transformers' Auto classes.

Importing ``jarvis.model.configuration`` registers ``model_type="jarvis"`` with ``AutoConfig``; importing
``jarvis.model.modeling`` registers the model with ``AutoModelForCausalLM`` / ``AutoModelForImageTextToText``
and the processor class with ``AutoProcessor`` (public ``register`` hooks, no ``trust_remote_code``).
``import jarvis`` imports both as soon as transformers is imported (see ``jarvis/__init__.py``).
"""

from __future__ import annotations


def register_auto_classes() -> None:
    """Register config, model and processor with the Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    from jarvis.model.configuration import JarvisConfig
    from jarvis.model.modeling import JarvisForCausalLM
    from jarvis.model.processing import processor_class

    AutoConfig.register(JarvisConfig.model_type, JarvisConfig, exist_ok=True)
    AutoModelForCausalLM.register(JarvisConfig, JarvisForCausalLM, exist_ok=True)
    AutoModelForImageTextToText.register(JarvisConfig, JarvisForCausalLM, exist_ok=True)
    # processor_config.json beside a checkpoint names its class; this mapping is the config-only fallback.
    AutoProcessor.register(JarvisConfig, processor_class(), exist_ok=True)
