"""Library versions and machine facts recorded with every run."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

LIBRARIES = (
    "elasticir", "torch", "transformers", "tokenizers", "sentence-transformers", "faiss-cpu", "faiss-gpu",
    "ir-measures", "pytrec-eval-terrier", "beir", "pyserini", "mteb", "numpy", "scipy", "pandas",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 1,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
