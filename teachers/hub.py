"""Before asking timm's hub for pretrained weights: are they cached, or can the hub be reached at all?

Offline, ``timm.create_model(pretrained=True)`` spends close to a minute in connection retries before it
fails. Here a cache look-up and one short connection attempt decide in at most a few seconds: weights in
the local cache are used without the network, and weights that are neither cached nor reachable are a
config error that names the fixes.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from distill.errors import ConfigError

CONNECT_TIMEOUT_S = 3.0


def reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def check_pretrained_available(name: str) -> None:
    """Raise ConfigError at once when ``name``'s pretrained weights are neither cached nor downloadable; when
    they are cached and the hub is unreachable, tell huggingface_hub to stay offline (no retries)."""
    import huggingface_hub
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        return  # create_model names the close matches
    pretrained = get_pretrained_cfg(name)
    if pretrained is None:
        raise ConfigError(f"timm has no pretrained weights for teacher '{name}'; set teacher.pretrained=false to "
                          "train it here, or give teacher.weights=<file>")
    sources = []
    if pretrained.hf_hub_id:
        cached = any(isinstance(huggingface_hub.try_to_load_from_cache(pretrained.hf_hub_id, filename), str)
                     for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
        if cached:
            if not reachable(huggingface_hub.constants.ENDPOINT):
                os.environ["HF_HUB_OFFLINE"] = "1"  # read from the cache without connection retries
            return
        sources.append(huggingface_hub.constants.ENDPOINT)
    elif isinstance(pretrained.url, str) and pretrained.url.startswith("http"):
        sources.append(pretrained.url)
    if huggingface_hub.constants.HF_HUB_OFFLINE and pretrained.hf_hub_id:
        raise ConfigError(f"teacher '{name}': timm's pretrained weights ({pretrained.hf_hub_id}) are not in the local "
                          "cache and HF_HUB_OFFLINE=1 forbids downloading them. Fix: download once with network "
                          "access, or set teacher.pretrained=false (train the teacher here) or teacher.weights=<file>")
    if sources and not any(reachable(source) for source in sources):
        host = urlparse(sources[0]).hostname
        raise ConfigError(f"teacher '{name}': timm's pretrained weights are not in the local cache and {host} cannot "
                          f"be reached (offline?). Fix: run once with network access (the weights are then cached), "
                          "or set teacher.pretrained=false to train the teacher here, or teacher.weights=<file>")
