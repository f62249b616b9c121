"""Tests of the progress line: counts, the estimated time left, and when it prints."""

from __future__ import annotations

import pytest

import thyroidseg._progress
from thyroidseg._progress import Progress, format_duration


class Clock:
    """A stand-in for ``time.perf_counter`` that the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(thyroidseg._progress.time, "perf_counter", fake)
    return fake


def test_no_estimate_without_a_known_length(clock: Clock) -> None:
    bar = Progress((n for n in range(3)), enabled=False)  # a generator has no len()
    for _ in bar:
        clock.now += 0.5
    line = bar.line()
    assert line.startswith("3 [") and "2.0 it/s" in line and "left" not in line


def test_every_item_prints_a_line_per_item_with_the_estimate(clock: Clock, capsys) -> None:
    bar = Progress(range(3), desc="epoch", unit="epoch", enabled=None, every_item=True)
    for step in bar:
        clock.now += 10 * (step + 1)  # 10 s, then 20 s, then 30 s
        bar.set_postfix(loss=0.5)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "~20.0s left" in lines[0]  # 10 s per epoch so far, 2 to go
    assert "~15.0s left" in lines[1]  # (10 + 20) / 2 s per epoch, 1 to go
    assert "left" not in lines[2] and all("loss=0.5" in line for line in lines)


def test_a_resumed_loop_counts_earlier_items_but_times_only_its_own(clock: Clock) -> None:
    bar = Progress(range(2, 6), total=6, initial=2, enabled=False)
    for _ in bar:
        clock.now += 5
        break
    bar.done += 1
    assert bar.line().startswith("3/6") and "~15.0s left" in bar.line()  # 3 to go at 5 s


def test_transient_bars_leave_nothing_in_logs(capsys) -> None:
    for _ in Progress(range(3), desc="steps", enabled=None, transient=True):
        pass
    assert capsys.readouterr().err == ""  # not a terminal
    for _ in Progress(range(3), desc="steps", enabled=None):
        pass
    assert "steps: 3/3" in capsys.readouterr().err


def test_format_duration() -> None:
    assert format_duration(0.04) == "0.0s"
    assert format_duration(59.4) == "59.4s"
    assert format_duration(61) == "1m01s"
    assert format_duration(2 * 3600 + 5 * 60) == "2h05m"
