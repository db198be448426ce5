"""Training losses for elastic encoders, one module per method, each registered with its own config.

Every method is a base loss applied to cells of one forward pass (losses.base.ElasticLoss); the modules:
plain (one cell), mrl (MRL, Kusupati et al. 2022), srl (Starbucks SRL on a pair list), srl_grid (SRL over a
whole grid), two_d_mse (2DMSE, Li et al. 2024), sortednet (SortedNet, Valipour et al. 2023). Importing this
package registers them in registration order (losses.registry), which is the order `--method` lists them in.
"""

from elasticir.training.losses.base import (
    KL_POINTS,
    KL_VARIANTS,
    LAYER_WEIGHTINGS,
    SCHEDULES,
    ElasticLoss,
    KLConfig,
    LossConfig,
    in_batch_scores,
    kl_div,
    validate_pairs,
)
from elasticir.training.losses.registry import LossSpec, lookup, names, register, unregister, used_by

# registration order is the order --method and its errors list the methods in
# isort: off
from elasticir.training.losses.srl import SRLConfig, SRLLoss
from elasticir.training.losses.srl_grid import FullGridSRLConfig, FullGridSRLLoss
from elasticir.training.losses.two_d_mse import TwoDMSEConfig, TwoDMSELoss
from elasticir.training.losses.sortednet import SortedNetConfig, SortedNetLoss
from elasticir.training.losses.mrl import MRLConfig, MRLLoss
from elasticir.training.losses.plain import PlainConfig, PlainLoss
# isort: on

__all__ = [
    "KL_POINTS", "KL_VARIANTS", "LAYER_WEIGHTINGS", "SCHEDULES", "ElasticLoss", "FullGridSRLConfig",
    "FullGridSRLLoss", "KLConfig", "LossConfig", "LossSpec", "MRLConfig", "MRLLoss", "PlainConfig", "PlainLoss",
    "SRLConfig", "SRLLoss", "SortedNetConfig", "SortedNetLoss", "TwoDMSEConfig", "TwoDMSELoss", "in_batch_scores",
    "kl_div", "lookup", "names", "register", "unregister", "used_by", "validate_pairs",
]
