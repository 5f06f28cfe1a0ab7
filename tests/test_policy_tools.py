"""``manip-rl eval``, ``video`` and ``plot`` on a real (tiny) training run."""

import os

import imageio.v2 as imageio
import pytest
from training_helpers import tiny_config

from manip_rl.cli import main
from manip_rl.policies import rundir
from manip_rl.policies.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("runs") / "reach")
    os.makedirs(path)
    cfg = tiny_config("ppo", steps=200)
    rundir.write_config(path, cfg)
    train(path, cfg, progress=False)
    return path


def test_eval_prints_success_with_interval_for_both_conditions(tiny_run, capsys):
    assert main(["eval", tiny_run, "--episodes", "3", "--model", "final"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| reach |")]
    assert [r.split("|")[3].strip() for r in rows] == ["randomized", "nominal"]
    for r in rows:
        cells = [c.strip() for c in r.split("|")]
        assert cells[2] == "final" and cells[6] == "3"
        lo, hi = (float(x.strip().rstrip("%")) for x in cells[5].split("–"))
        assert 0 <= lo <= float(cells[4].rstrip("%")) <= hi <= 100


def test_eval_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["eval", str(tmp_path)])


def test_video_writes_every_frame_of_each_episode(tiny_run, tmp_path):
    out = str(tmp_path / "reach.gif")
    assert main(["video", tiny_run, "--out", out, "--episodes", "1", "--size", "64"]) == 0
    frames = imageio.mimread(out)
    assert len(frames) == 51  # the reset frame + 50 steps
    assert frames[0].shape[:2] == (64, 64)


def test_plot_draws_several_runs_on_one_png(tiny_run, tmp_path):
    out = str(tmp_path / "curves.png")
    assert main(["plot", tiny_run, tiny_run, "--labels", "a", "b", "--out", out]) == 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="labels"):
        main(["plot", tiny_run, "--labels", "a", "b", "--out", out])
    with pytest.raises(SystemExit, match="png"):
        main(["plot", tiny_run, "--out", str(tmp_path / "curves.jpg")])
