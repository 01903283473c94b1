"""SmolTolk text-speech language models for Hugging Face Transformers.

Importing the package registers SmolTolk with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, and marks the
classes for auto-class export so that `save_pretrained` ships the model code next to the weights (Hub remote code).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_smoltolk import PRESETS, SmolTolkConfig
from .modeling_smoltolk import SmolTolkForCausalLM, SmolTolkModel, SmolTolkPreTrainedModel

AutoConfig.register(SmolTolkConfig.model_type, SmolTolkConfig, exist_ok=True)
AutoModel.register(SmolTolkConfig, SmolTolkModel, exist_ok=True)
AutoModelForCausalLM.register(SmolTolkConfig, SmolTolkForCausalLM, exist_ok=True)
SmolTolkConfig.register_for_auto_class()
SmolTolkModel.register_for_auto_class("AutoModel")
SmolTolkForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "SmolTolkConfig",
    "SmolTolkForCausalLM",
    "SmolTolkModel",
    "SmolTolkPreTrainedModel",
]
