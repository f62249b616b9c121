"""The output rules every command follows: never replace a file it did not create without
``--overwrite``, never write over one of its inputs, and one run at a time per output folder."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import thyroidseg.io.outputs as outputs
from thyroidseg.cli import main
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.io.files import write_image
from thyroidseg.io.outputs import (
    LOCK_FILE,
    FolderInUseError,
    OutputExistsError,
    check_outputs,
    reserve_folder,
)
from thyroidseg.training.workflows import train_folder


def test_check_outputs_refuses_inputs_duplicates_folders_and_existing_files(tmp_path: Path):
    scan, other = tmp_path / "scan.png", tmp_path / "out.json"
    scan.write_bytes(b"scan")
    with pytest.raises(ValueError, match="inputs: it is never written over"):
        check_outputs([tmp_path / "sub" / ".." / "scan.png"], inputs=[scan], overwrite=True)
    link = tmp_path / "link.png"
    link.symlink_to(scan)
    with pytest.raises(ValueError, match="never written over"):
        check_outputs([link], inputs=[scan], overwrite=True)
    with pytest.raises(ValueError, match="given for two outputs"):
        check_outputs([other, tmp_path / "." / "out.json"])
    with pytest.raises(ValueError, match="is a folder"):
        check_outputs([tmp_path], overwrite=True)
    other.write_text("{}")
    with pytest.raises(OutputExistsError, match=r"1 output file\(s\) exist already") as caught:
        check_outputs([other, None])
    assert caught.value.paths == [other]
    check_outputs([other, None], overwrite=True)  # allowed, nothing raised
    assert scan.read_bytes() == b"scan" and other.read_text() == "{}"  # checks write nothing


def test_reserve_folder_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path):
    folder = tmp_path / "out"
    with reserve_folder(folder) as lock:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and lock.name == LOCK_FILE
        with reserve_folder(folder):  # the same process re-enters
            pass
        assert lock.exists()
    assert not folder.exists()  # created here and left empty: removed again

    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_FILE).write_text(json.dumps({**holder, "pid": sleeper.pid}))
        with pytest.raises(FolderInUseError, match=f"process {sleeper.pid} on"):
            with reserve_folder(folder):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with reserve_folder(folder) as lock:  # the holder is gone: a killed run's lock
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    (folder / LOCK_FILE).write_text(json.dumps({**holder, "host": "elsewhere"}))
    with pytest.raises(FolderInUseError, match="on elsewhere"):
        with reserve_folder(folder):
            pass


def masks(folder: Path) -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 255
    for stem in ("100_1", "101_1"):
        write_image(folder / f"{stem}.png", mask)


def test_evaluate_never_writes_over_a_mask_and_asks_before_replacing(tmp_path, capsys):
    preds, labels = tmp_path / "pred", tmp_path / "label"
    masks(preds)
    masks(labels)
    before = (labels / "100_1.png").read_bytes()
    for extra in ([], ["--overwrite"]):
        for flag in ("--json", "--csv"):
            argv = ["evaluate", str(preds), str(labels), flag, str(labels / "100_1.png")]
            assert main([*argv, *extra]) == 2
            assert "is one of this command's inputs" in capsys.readouterr().err
    assert (labels / "100_1.png").read_bytes() == before
    report = tmp_path / "report.json"
    report.write_text("mine")
    assert main(["evaluate", str(preds), str(labels), "--json", str(report)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and report.read_text() == "mine"
    assert main(["evaluate", str(preds), str(labels), "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text())["n_pairs"] == 2


def test_preprocess_json_never_lands_on_an_image(tmp_path, capsys):
    scans, out = tmp_path / "scans", tmp_path / "out"
    write_synthetic_dataset(tmp_path / "data", 2, size=(48, 64), seed=0)
    scans.mkdir()
    for path in sorted((tmp_path / "data" / "images").iterdir()):
        (scans / path.name).write_bytes(path.read_bytes())
    stem = sorted(scans.iterdir())[0].stem
    scan_bytes = (scans / f"{stem}.png").read_bytes()
    common = ["preprocess", str(scans), str(out), "--size", "32", "32", "--quiet"]
    assert main([*common, "--json", str(out / f"{stem}.png")]) == 2
    assert "given for two outputs" in capsys.readouterr().err and not out.exists()
    assert main([*common, "--json", str(scans / f"{stem}.png"), "--overwrite"]) == 2
    assert "never written over" in capsys.readouterr().err
    assert (scans / f"{stem}.png").read_bytes() == scan_bytes


def test_a_new_run_never_replaces_another_runs_best_checkpoint_or_history(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(48, 64), seed=0)
    for name in ("best.pt", "history.csv"):
        run = tmp_path / f"run-{name}"
        run.mkdir()
        (run / name).write_text("someone else's")
        with pytest.raises(FileExistsError, match="holds another run's files"):
            train_folder(data, run, folds=2, size=(32, 32), base_channels=4, epochs=1)
        assert (run / name).read_text() == "someone else's"


def test_a_second_run_into_a_held_folder_is_refused(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(48, 64), seed=0)
    run = tmp_path / "run"
    with reserve_folder(run):  # as if another process trained there
        lock = run / LOCK_FILE
        lock.write_text(json.dumps({**json.loads(lock.read_text()), "host": "other-host"}))
        argv = ["train", str(data), str(run), "--folds", "2", "--size", "32", "32"]
        assert main([*argv, "--epochs", "1", "--base-channels", "4", "--quiet"]) == 2
        assert "is in use by another run" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


RACER = """
import importlib.util, json, os, sys, time
from pathlib import Path

folder, log, source = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("outputs", source)  # stdlib only: starts fast
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)
is_dead = outputs._is_dead

def slow_is_dead(holder):  # widens the window between judging the holder and taking over
    time.sleep(0.3)
    return is_dead(holder)

outputs._is_dead = slow_is_dead
(log / f"ready-{os.getpid()}").touch()
while not (log / "go").exists():
    time.sleep(0.005)
try:
    with outputs.reserve_folder(folder):
        start = time.monotonic()
        time.sleep(0.5)
        named = json.loads((folder / outputs.LOCK_FILE).read_text())["pid"]
        end = time.monotonic()
    (log / f"held-{os.getpid()}.json").write_text(json.dumps([start, end, named, os.getpid()]))
except outputs.FolderInUseError:
    pass
"""


def test_of_three_runs_that_find_a_dead_holder_exactly_one_takes_the_folder(tmp_path: Path):
    folder, log = tmp_path / "out", tmp_path / "log"
    folder.mkdir()
    log.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(log), outputs.__file__])
        for _ in range(3)
    ]
    while len(list(log.glob("ready-*"))) < len(racers):
        time.sleep(0.01)
    (log / "go").touch()
    assert [racer.wait(timeout=60) for racer in racers] == [0, 0, 0]
    holds = [json.loads(path.read_text()) for path in log.glob("held-*.json")]
    assert holds and all(named == own for _, _, named, own in holds)  # its lock to the end
    spans = sorted((start, end) for start, end, _, _ in holds)
    assert all(end <= later for (_, end), (later, _) in itertools.pairwise(spans))  # one by one
    assert not (folder / LOCK_FILE).exists()
