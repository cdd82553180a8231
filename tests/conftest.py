"""Suite-wide settings: offline, small thread pools, deterministic hypothesis profile."""
import os

# Nothing may touch the network: Hugging Face libraries must read local files only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{family: folder} of the tiny random Hugging Face checkpoints of
    :mod:`pinclip.testing.tiny_checkpoints` (the one definition of the tiny models), written once
    per session, offline: every family the installed transformers supports (``clip``,
    ``clip_vision``, ``siglip``, ``qwen2_vl_vision``, ``qwen2_vl``, ``qwen3_vl`` where available,
    ``bert``)."""
    from pinclip.testing.tiny_checkpoints import write_tiny_checkpoints
    paths = write_tiny_checkpoints(tmp_path_factory.mktemp("hf"), seed=0)
    return {k: str(v) for k, v in paths.items()}
