"""Hugging Face loads are local-only (a missing checkpoint fails at once, not after the hub
client's retries) and ``--quiet`` silences the Hugging Face progress bars too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def test_a_missing_checkpoint_fails_at_once_without_hf_hub_offline(tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE the hub client would retry a hub id five times (~25 s) before
    failing; local_files_only makes it fail at once, naming the config key and the path. Run in a
    fresh interpreter: the test session set HF_HUB_OFFLINE=1 before huggingface_hub read it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    script = (
        "import json, sys, time\n"
        "from pinclip import create_model\n"
        "from pinclip.config import ConfigError\n"
        "out = []\n"
        f"for where in ('no-such-org/no-such-clip-checkpoint', {str(tmp_path / 'nowhere')!r}):\n"
        "    t0 = time.perf_counter()\n"
        "    try:\n"
        "        create_model('pinclip-clip-vit', vision={'pretrained': where})\n"
        "    except ConfigError as exc:\n"
        "        out.append([time.perf_counter() - t0, str(exc), type(exc).__name__])\n"
        "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(results) == 2
    for (seconds, message, name), where in zip(results, ("no-such-org/no-such-clip-checkpoint",
                                                         str(tmp_path / "nowhere"))):
        assert seconds < 10, (seconds, message)   # generous: it takes well under a second
        assert name == "PretrainedNotFoundError"
        assert "vision.pretrained" in message and where in message
    assert "Retrying" not in res.stderr


def _hf_text_model_script(bert: Path, quiet: bool) -> str:
    return ("import os\n"
            + ("from training.logging_utils import quiet_third_party\nquiet_third_party()\n" if quiet else "")
            + "from pinclip import create_model\n"
            f"create_model('pinclip-tiny-demo', text={{'pretrained': {str(bert)!r}}})\n"
            "print('built')\n")


@pytest.fixture
def tiny_bert(hf_checkpoints):
    return Path(hf_checkpoints["bert"])


def test_quiet_third_party_silences_the_loading_weights_bar(tiny_bert):
    env = _env(HF_HUB_OFFLINE="1")
    loud = subprocess.run([sys.executable, "-c", _hf_text_model_script(tiny_bert, quiet=False)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr      # the bar this test is about (transformers prints it)
    quiet = subprocess.run([sys.executable, "-c", _hf_text_model_script(tiny_bert, quiet=True)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "built" in quiet.stdout, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "it/s]" not in quiet.stderr


@pytest.mark.parametrize("argv", [["embed", "RUN", "--out", "OUT", "--quiet"], ["evaluate", "RUN", "--quiet"],
                                  ["export", "RUN", "--out", "OUT", "--quiet"], ["train", "--resume", "RUN", "--quiet"],
                                  ["search", "INDEX", "--text", "x", "--quiet"]])
def test_the_cli_quiet_flag_silences_third_party_bars(argv, tmp_path, monkeypatch, capsys):
    import training.logging_utils
    from training.cli import main

    calls = []
    monkeypatch.setattr(training.logging_utils, "quiet_third_party", lambda: calls.append(True))
    monkeypatch.chdir(tmp_path)     # RUN, OUT and INDEX do not exist: the command fails as a user error
    assert main(argv) == 2
    assert calls == [True]
    assert main([a for a in argv if a != "--quiet"]) == 2
    assert calls == [True]
