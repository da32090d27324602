"""Progress bars off a terminal: one plain line per update, throttled, never carriage-return redraws."""

from __future__ import annotations

import io

import pytest

from jarvis.progress import progress


def test_off_terminal_each_update_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()  # not a TTY, like a SLURM log file
    for _ in progress(range(5), desc="cache features", unit="shard", file=out, mininterval=0, miniters=1):
        pass
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("cache features:   0%") and "5/5" in lines[-1]
    assert [next(i for i, line in enumerate(lines) if f" {k}/5 " in line) for k in range(6)] == list(range(6))
    assert len(lines) <= 7  # one line per update, plus the final state on close


def test_off_terminal_updates_are_throttled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()
    bar = progress(total=1000, desc="evaluate", file=out)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "0/1000" in lines[0] and "1000/1000" in lines[1]  # first and final state only


def test_bad_interval_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_PROGRESS_INTERVAL", "often")
    with pytest.raises(ValueError, match="JARVIS_PROGRESS_INTERVAL='often'"):
        progress(range(2), file=io.StringIO())


def test_training_bar_follows_the_optimizer_steps(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerControl, TrainerState

    from jarvis.training import TrainProgress

    monkeypatch.setenv("JARVIS_PROGRESS_INTERVAL", "0")
    state, control = TrainerState(max_steps=3, is_world_process_zero=True), TrainerControl()
    cb = TrainProgress("pretrain")
    cb.on_train_begin(None, state, control)
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_step_end(None, state, control)
        cb.on_log(None, state, control, logs={"loss": 1.0 / step})
    cb.on_train_end(None, state, control)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "pretrain: 100%" in err.splitlines()[-1] and "3/3" in err.splitlines()[-1]
