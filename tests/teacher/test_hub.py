"""teacher.pretrained=true offline: a config error in seconds (no hub retries), cached weights used offline."""

from __future__ import annotations

import os
import time

import pytest

from distill.errors import ConfigError
from teachers import hub


def test_uncached_weights_with_the_hub_unreachable_fail_at_once(monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.CONNECT_TIMEOUT_S: False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, filename: None)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"teacher 'resnet18': .* not in the local cache and huggingface.co cannot "
                                          r"be reached .*teacher.pretrained=false"):
        hub.check_pretrained_available("resnet18")
    assert time.perf_counter() - start < 5


def test_cached_weights_are_read_offline_without_retries(monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.CONNECT_TIMEOUT_S: False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache",
                        lambda repo, filename: "/cache/model.safetensors" if filename == "model.safetensors" else None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.check_pretrained_available("resnet18")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")


def test_a_model_without_pretrained_weights_is_named():
    with pytest.raises(ConfigError, match="timm has no pretrained weights for teacher 'cifar_resnet20'"):
        hub.check_pretrained_available("cifar_resnet20")


def test_an_unreachable_host_is_detected_within_the_timeout():
    start = time.perf_counter()
    assert not hub.reachable("https://127.0.0.1:9", timeout=1.0)  # nothing listens on the discard port
    assert time.perf_counter() - start < 2


def test_the_teacher_build_refuses_before_any_download(monkeypatch):
    from teachers import build_teacher

    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.CONNECT_TIMEOUT_S: False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, filename: None)
    with pytest.raises(ConfigError, match="cannot be reached"):
        build_teacher({"name": "resnet18", "pretrained": True, "kwargs": {}}, 10, 1, (1, 28, 28))
