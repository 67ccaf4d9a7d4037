"""Whether wandb should log offline: decided from the environment without importing wandb or Lightning (every
config resolves it, so ``--help`` and config errors must not pay for those imports)."""

from __future__ import annotations

import netrc
import os
import socket


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_offline() -> bool:
    """True unless the user forces online mode or has an API key and the service answers."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online":
        return False
    return not (_has_wandb_key() and _reachable())
