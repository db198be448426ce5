"""Is the network usable? Answered fast, so offline runs fail in seconds instead of retrying for a minute."""

from __future__ import annotations

import os
import socket

OFFLINE_VARIABLES = ("ELASTICIR_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def network_allowed(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """False when an offline variable is set to 1 or `host` cannot be reached on port 443."""
    if any(os.environ.get(name) == "1" for name in OFFLINE_VARIABLES):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
