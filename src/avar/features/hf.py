"""Loading Hugging Face backbones so that a missing model fails at once instead of hanging.

``from_pretrained`` on an id that is not cached retries an unreachable hub with growing
timeouts (a minute or more). An extractor that cannot get its weights should instead say
so immediately and point at the offline extractors, which is what ``load_pretrained`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import validate_repo_id

from avar.features.base import WeightsUnavailableError, hub_offline

PROBE_TIMEOUT_S = 5.0
"""How long the single reachability check of the hub may take before giving up."""

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

ModelT = TypeVar("ModelT")


def _invalid_repo_id(source: str) -> str | None:
    """Why ``source`` cannot be a hub id, or None when it can."""
    try:
        validate_repo_id(source)
    except ValueError as err:
        return str(err)
    return None


def weights_available_offline(source: str) -> bool:
    """True when ``source`` loads without the network.

    That is a local directory with a ``config.json``, or a hub id whose config and
    weights are both in the local Hugging Face cache.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return (path / "config.json").is_file()
    if _invalid_repo_id(source):
        return False
    if not isinstance(try_to_load_from_cache(source, "config.json"), str):
        return False
    return any(isinstance(try_to_load_from_cache(source, name), str) for name in WEIGHT_FILES)


def weights_folder(source: str) -> Path | None:
    """The local folder holding ``source``'s weights: the directory itself, or the snapshot
    folder of a hub id in the Hugging Face cache (None when it is not cached)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if _invalid_repo_id(source):
        return None
    cached = try_to_load_from_cache(source, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def _probe_hub(name: str, source: str) -> None:
    """One short request for the model's config; raise at once if the hub does not answer."""
    try:
        get_hf_file_metadata(hf_hub_url(source, "config.json"), timeout=PROBE_TIMEOUT_S)
    # The HTTP stack's exception types differ across huggingface_hub versions (requests,
    # httpx, httpx2); whichever it raises, the weights cannot be fetched now.
    except Exception as err:
        reason = f"not cached and the Hugging Face hub did not answer ({type(err).__name__}: {err})"
        raise WeightsUnavailableError(name, source, reason) from err


def load_pretrained(model_cls: type[ModelT], name: str, source: str) -> ModelT:
    """``model_cls.from_pretrained(source)`` that never retries a hub it cannot reach.

    ``source`` is a local directory (loaded as is) or a hub id. A cached id, or any id
    while ``HF_HUB_OFFLINE`` is set, is loaded from the cache only. Otherwise the hub gets
    one short probe before downloading. Every failure to find the weights becomes a
    ``WeightsUnavailableError`` naming the extractor ``name``.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            return model_cls.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise WeightsUnavailableError(
                name, source, f"directory {path} does not hold a saved {model_cls.__name__}: {err}"
            ) from err
    invalid = _invalid_repo_id(source)
    if invalid:
        raise WeightsUnavailableError(
            name, source, f"no such directory, and not a Hugging Face model id ({invalid})"
        )
    if hub_offline() or weights_available_offline(source):
        try:
            return model_cls.from_pretrained(source, local_files_only=True)
        except OSError as err:
            reason = "not in the local Hugging Face cache"
            if hub_offline():
                reason += " and HF_HUB_OFFLINE is set"
            raise WeightsUnavailableError(name, source, f"{reason} ({err})") from err
    _probe_hub(name, source)
    try:
        return model_cls.from_pretrained(source)
    except OSError as err:
        raise WeightsUnavailableError(name, source, f"download failed ({err})") from err


class HubBackbone:
    """Mixin for extractors whose weights are a Hugging Face model (hub id or local folder).

    Subclasses set ``name`` and ``default_source`` and build their model with ``_hub_model``.
    """

    name: str
    default_source: str

    @classmethod
    def available_offline(cls, weights: str | None = None) -> bool:
        """True when ``weights`` (default: the hub id) is a local model or in the HF cache."""
        return weights_available_offline(weights or cls.default_source)

    def _hub_model(self, model_cls: type[ModelT], config_cls: type, weights: str | None, random_weights: bool) -> ModelT:
        """The pretrained model from ``weights`` (default ``default_source``), or ``config_cls()``'s
        architecture with random weights; sets ``source`` and ``weights_location``."""
        self.source = "random" if random_weights else weights or self.default_source
        if random_weights:
            return model_cls(config_cls())
        model = load_pretrained(model_cls, self.name, self.source)
        self.weights_location = weights_folder(self.source)
        return model
