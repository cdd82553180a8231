"""Every CLI writer guards its --out (graph.output_dir), and the CLI prints user errors, not
bugs, as one line with exit status 2."""
from __future__ import annotations

import json

import pytest

from torch.utils.data import Dataset

from graph.errors import ToolkitError
from training import cli
from training.cli import main as cli_main


def _user_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    return path


def _synth(out, *extra):
    return cli_main(["synth", "--out", str(out), "--pins", "30", "--boards", "3", "--seed", "0", "--no-images",
                     "--quiet", *extra])


def test_synth_refuses_a_user_folder_a_file_and_the_current_directory(tmp_path, capsys, monkeypatch):
    user = _user_folder(tmp_path / "mine")
    assert _synth(user) == 2
    err = capsys.readouterr().err
    assert f"{user}: exists and holds 1 entries of its own (thesis.tex)" in err and "Traceback" not in err
    assert (user / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    assert _synth(tmp_path / "file") == 2 and "is a file" in capsys.readouterr().err
    world = tmp_path / "world"
    assert _synth(world) == 0
    assert _synth(world, "--fresh-fraction", "0.2") == 0  # its own earlier output: replaced
    assert json.loads((world / "synth.json").read_text())["params"]["fresh_fraction"] == 0.2
    monkeypatch.chdir(world)
    assert _synth(".") == 2 and "current directory" in capsys.readouterr().err
    assert (world / "synth.json").is_file()


def test_build_graph_and_report_refuse_other_outputs(tmp_path, capsys):
    world = tmp_path / "world"
    assert _synth(world) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    (run / "metrics.jsonl").write_text("")
    rc = cli_main(["build-graph", str(world), "--out", str(run), "--quiet"])
    assert rc == 2 and "a training run" in capsys.readouterr().err
    rc = cli_main(["build-graph", str(world), "--out", str(world), "--quiet"])
    assert rc == 2 and "dataset" in capsys.readouterr().err
    (tmp_path / "report.md").write_text("my notes")
    rc = cli_main(["report", str(run), "--out", str(tmp_path / "report.md"), "--quiet"])
    assert rc == 2 and "is a file" in capsys.readouterr().err
    assert (tmp_path / "report.md").read_text() == "my notes"
    rc = cli_main(["demo", "--out", str(world)])
    assert rc == 2 and "a synthetic dataset" in capsys.readouterr().err


def test_ann_index_refuses_before_training_the_index(tmp_path, capsys):
    pytest.importorskip("faiss")
    user = _user_folder(tmp_path / "mine")
    rc = cli_main(["ann-index", str(tmp_path / "no_embeddings"), "--out", str(user)])
    assert rc == 2 and "entries of its own" in capsys.readouterr().err


def test_bad_device_is_a_message(tmp_path, capsys):
    rc = cli_main(["demo", "--out", str(tmp_path / "d"), "--device", "gpu0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device: 'gpu0' is not a torch device" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


class DataProblem(ToolkitError):
    pass


class _BadImages(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        raise DataProblem("pin 7: image.png is not a regular file\nsecond line")


def test_bugs_keep_their_traceback_and_worker_errors_lose_theirs(monkeypatch, capsys):
    from graph.errors import user_message

    def buggy(args):
        raise ValueError("an internal invariant broke")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["graph-stats"].set_defaults(func=buggy)
    with pytest.raises(ValueError, match="internal invariant"):
        cli_main(["graph-stats", "anything"])

    from torch.utils.data import DataLoader
    loader = DataLoader(_BadImages(), batch_size=None, num_workers=1)
    with pytest.raises(DataProblem) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # what torch gives
    assert user_message(info.value) == "pin 7: image.png is not a regular file\nsecond line"
    assert user_message(DataProblem("plain")) == "plain"


def test_a_command_module_that_fails_to_import_fails_loudly(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "no_such_command"])
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()
