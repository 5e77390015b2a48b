"""The helix model zoo: HELIX-family classifiers and Audio Mamba, behind one registry."""

from helix.models.aum import AudioMamba, AuMConfig
from helix.models.backbone import HelixClassifier
from helix.models.config import ModelConfig
from helix.models.loading import LoadedModel, load_model
from helix.models.params import count_parameters, parameter_report, solve_ffn_width
from helix.models.registry import (BACKBONES, check_model_options, create_model, list_models, model_config_class,
                                   model_defaults, register_model, scale_pattern)

__all__ = [
    "AudioMamba", "AuMConfig", "BACKBONES", "HelixClassifier", "LoadedModel", "ModelConfig", "check_model_options",
    "count_parameters", "create_model", "list_models", "load_model", "model_config_class", "model_defaults",
    "parameter_report", "register_model", "scale_pattern", "solve_ffn_width",
]
