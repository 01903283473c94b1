"""SmolTolk text-speech language models for Hugging Face Transformers.

Importing the package registers SmolTolk with `AutoConfig`, `AutoModel`, `AutoModelForCausalLM` and `AutoProcessor`,
marks the classes for auto-class export so that `save_pretrained` ships the code next to the weights (Hub remote
code), and registers the `speech-continuation` pipeline.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

from .backbones import embedded_backbone_path, load_embedded_backbone, locate_embedded_gguf
from .configuration_smoltolk import PRESETS, SmolTolkConfig
from .conversion import convert_authors_checkpoint
from .data.collator import SmolTolkDataCollator
from .data.mixture import SmolTolkMixture
from .data.prepare import UNIT_DATASET_COLUMNS, tokenize_audio_dataset
from .data.samples import InterleavedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder
from .demo.corpus import synthesize_corpus
from .evaluation import ScoringOptions, evaluate_items, load_benchmark, speech_nll
from .hub import export_for_hub, push_to_hub
from .modeling_smoltolk import SmolTolkForCausalLM, SmolTolkModel, SmolTolkPreTrainedModel
from .pipeline_speech_continuation import SmolTolkStreamer, SpeechContinuationPipeline, register_pipeline
from .processing_smoltolk import SmolTolkProcessor
from .training import SmolTolkTrainer, TwoStageCallback, TwoStageSchedule, run_training
from .tokenization_speech import HubertFrontEnd, MfccFrontEnd, SpeechTokenizer, load_audio
from .vocoder import UnitVocoder, UnitVocoderConfig, UnitVocoderOutput, convert_fairseq_vocoder

AutoConfig.register(SmolTolkConfig.model_type, SmolTolkConfig, exist_ok=True)
AutoModel.register(SmolTolkConfig, SmolTolkModel, exist_ok=True)
AutoModelForCausalLM.register(SmolTolkConfig, SmolTolkForCausalLM, exist_ok=True)
SmolTolkConfig.register_for_auto_class()
SmolTolkModel.register_for_auto_class("AutoModel")
SmolTolkForCausalLM.register_for_auto_class("AutoModelForCausalLM")
AutoProcessor.register(SmolTolkConfig, SmolTolkProcessor, exist_ok=True)
SmolTolkProcessor.register_for_auto_class()
register_pipeline()

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "UNIT_DATASET_COLUMNS",
    "HubertFrontEnd",
    "InterleavedSampleBuilder",
    "MfccFrontEnd",
    "SmolTolkConfig",
    "SmolTolkDataCollator",
    "SmolTolkForCausalLM",
    "SmolTolkMixture",
    "SmolTolkModel",
    "SmolTolkPreTrainedModel",
    "SmolTolkProcessor",
    "SmolTolkStreamer",
    "SmolTolkTrainer",
    "SpeechSampleBuilder",
    "ScoringOptions",
    "SpeechContinuationPipeline",
    "SpeechTokenizer",
    "TextSampleBuilder",
    "TwoStageCallback",
    "TwoStageSchedule",
    "UnitVocoder",
    "UnitVocoderConfig",
    "UnitVocoderOutput",
    "convert_authors_checkpoint",
    "convert_fairseq_vocoder",
    "embedded_backbone_path",
    "evaluate_items",
    "export_for_hub",
    "load_benchmark",
    "load_audio",
    "load_embedded_backbone",
    "locate_embedded_gguf",
    "push_to_hub",
    "run_training",
    "speech_nll",
    "synthesize_corpus",
    "tokenize_audio_dataset",
]
