"""Models: Wide ResNets with normalisation inside the model (inputs in [0, 1])."""

from nkd.models.wrn import WideResNet, create_model, parse_model_name, count_params

__all__ = ["WideResNet", "create_model", "parse_model_name", "count_params"]
