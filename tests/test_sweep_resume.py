"""Sweeps that survive a crash (vae_lab.sweep, docs/sweeps.md): a sweep killed with SIGKILL and run
again with the same command ends with the same weights and curves as one never interrupted; a
failing job, a changed config and a folder another process is at work in are each one line, and
nothing is lost; the status command reads any sweep folder."""
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import DATA_ROOT, REPO, TINY_RUN, made_once, scalars
from vae_lab import report
from vae_lab.events import is_mark, records
from vae_lab.sweep import folder_name, main as sweep_main, status

GRID = "beta=1,2,3,4"
# 3 epochs of 40 steps, each step's loss logged and on disk within 0.05 s (logger.flush_secs), so
# that a kill during an epoch leaves that epoch's first steps in the events, past the last checkpoint
JOB = ["epochs=3", *TINY_RUN, "trainer.limit_train_batches=40", "trainer.log_every_n_steps=1",
       "callbacks.figures=null", "+logger.flush_secs=0.05"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# one thread in every job, whichever launcher runs it: exactness holds at a fixed thread count
ENV = {**os.environ, "VAE_LAB_DATA": str(DATA_ROOT), "OMP_NUM_THREADS": "1"}


def command(sweep_dir, *overrides) -> list[str]:
    return [sys.executable, "train.py", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]


def run_sweep(sweep_dir, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run(command(sweep_dir, *overrides), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def kill_during_third_job(sweep_dir, *overrides) -> str:
    """Start the sweep and SIGKILL it (all its processes) once the third job, beta=3, is in an epoch
    after its first checkpoint, with some of that epoch's steps in its events; returns the sweep's
    status as that job started."""
    process = subprocess.Popen(command(sweep_dir, *overrides), cwd=REPO, env=ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job, running = sweep_dir / "beta=3", None
    try:
        while not past_its_checkpoint(job):
            assert process.poll() is None, "the sweep ended before it could be killed"
            if running is None and (job / "job.json").is_file():  # before it trains: time to spare
                running = status(sweep_dir)
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert json.loads((job / "summary.json").read_text())["status"] == "running"  # it really was cut short
    return running


def past_its_checkpoint(job) -> bool:
    """Whether the job's events hold a step logged after the mark of its last.ckpt's step."""
    step = checkpoint_step(job / "checkpoints" / "last.ckpt")
    if step is None:
        return False
    events = [event for path in sorted(job.glob("events.out.tfevents.*")) for _, event in records(path)]
    marks = [i for i, event in enumerate(events) if is_mark(event, step)]
    return bool(marks) and any(event.step >= step and event.summary.value for event in events[marks[-1]:])


@functools.cache
def step_of(path, mtime: int) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def checkpoint_step(path) -> int | None:
    """The global step of the checkpoint at path (read again only when it was replaced), or None."""
    try:
        return step_of(path, path.stat().st_mtime_ns)
    except FileNotFoundError:
        return None


def same_runs(sweep_dir, reference) -> None:
    """Every job's last.ckpt bit-identical to the uninterrupted sweep's; every scalar curve equal,
    no step twice."""
    for beta in (1, 2, 3, 4):
        job, whole = sweep_dir / f"beta={beta}", reference / f"beta={beta}"
        found, expected = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (job, whole))
        assert found["global_step"] == expected["global_step"] == 3 * 40
        for name, tensor in expected["state_dict"].items():
            assert torch.equal(found["state_dict"][name], tensor), (beta, name)
        for name, tensor in expected["optimizer_states"][0]["state"][0].items():
            assert torch.equal(found["optimizer_states"][0]["state"][0][name], tensor), (beta, name)
        curves, expected_curves = scalars(job), scalars(whole)
        for tag, points in curves.items():
            steps = [step for step, _ in points]
            assert len(steps) == len(set(steps)), f"beta={beta}: {tag} logs a step twice"
        assert curves == expected_curves, beta
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == sorted(p.name for p in (whole / "checkpoints").iterdir())


def outcome_table(stdout: str) -> dict:
    """{job folder: (outcome, rest of the row)} from the table a sweep prints at its end."""
    lines = stdout[stdout.index("\nsweep "):].splitlines()[2:]
    rows = [line.split(None, 3) for line in lines if line[:1].isdigit()]
    return {row[1]: (row[2], row[3] if len(row) > 3 else "") for row in rows}


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_root):
    def make(sweep_dir):
        result = run_sweep(sweep_dir, GRID, *JOB)
        assert result.returncode == 0, result.stderr[-3000:]

    return made_once(tmp_path_factory, "uninterrupted-sweep", make)


def test_a_killed_sweep_run_again_skips_finished_jobs_and_resumes_the_killed_one_bit_exactly(tmp_path, uninterrupted):
    sweep_dir = tmp_path / "sweep"
    running = kill_during_third_job(sweep_dir, GRID, *JOB)
    assert [line.split()[2] for line in running.splitlines()[2:6]] == ["finished", "finished", "running", "not"], running

    printed = subprocess.run([sys.executable, "train.py", "sweep", "status", str(sweep_dir)], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=120)  # vae-lab sweep status: the same command
    assert printed.returncode == 0, printed.stderr
    rows = {line.split()[1]: line.split()[2] for line in printed.stdout.splitlines()[2:] if line[:1].isdigit()}
    assert rows == {"beta=1": "finished", "beta=2": "finished", "beta=3": "killed", "beta=4": "not"}, printed.stdout
    assert "re-running the sweep resumes it from checkpoints/last.ckpt" in printed.stdout
    assert f"to finish it: python train.py -m {GRID}" in printed.stdout and f"hydra.sweep.dir={sweep_dir}" in printed.stdout

    again = run_sweep(sweep_dir, GRID, *JOB)
    assert again.returncode == 0, again.stderr[-3000:]
    table = outcome_table(again.stdout)
    assert {job: outcome for job, (outcome, _) in table.items()} == {
        "beta=1": "skipped", "beta=2": "skipped", "beta=3": "resumed", "beta=4": "done"}
    assert "job 2 (beta=3): resuming from its checkpoints/last.ckpt, after epoch" in again.stdout
    assert again.stdout.count("vae_lab: model=") == 2  # beta=1 and beta=2 did not train again
    same_runs(sweep_dir, uninterrupted)

    report.main([str(sweep_dir)])  # counts each run once, in job order
    rows = [line.split("|")[1:4] for line in (sweep_dir / "report.md").read_text().splitlines() if line.startswith("| beta=")]
    assert [[cell.strip() for cell in row] for row in rows] == [[f"beta={b}", str(b), "finished"] for b in (1, 2, 3, 4)]


def test_a_killed_joblib_sweep_with_a_failing_job_run_again_ends_as_an_uninterrupted_one(tmp_path, uninterrupted):
    """Two jobs at a time, in worker processes, and a fifth job whose β is invalid: it fails with one
    line and the others train; the grid's fifth value leaves the other jobs' folders as they are."""
    sweep_dir = tmp_path / "sweep"
    kill_during_third_job(sweep_dir, GRID + ",-1", *JOB, *JOBLIB)
    again = run_sweep(sweep_dir, GRID + ",-1", *JOB, *JOBLIB)
    assert again.returncode == 1  # a job failed
    assert "error: beta=-1 must be a number >= 0" in again.stderr and "Traceback" not in again.stderr
    table = outcome_table(again.stdout)
    assert table["beta=1"][0] == table["beta=2"][0] == "skipped" and table["beta=3"][0] == "resumed"
    assert table["beta=4"][0] in ("resumed", "done")  # it ran beside beta=3: killed at any point
    log = sweep_dir / "beta=-1" / "train.log"
    assert table["beta=-1"] == ("failed", f"—  beta=-1 must be a number >= 0 (e.g. python train.py beta=...); log {log}")
    assert "error: beta=-1 must be a number >= 0" in log.read_text()
    same_runs(sweep_dir, uninterrupted)


def test_a_job_folder_holding_another_config_or_in_use_is_refused_and_left_as_it_was(tmp_path, uninterrupted):
    """The finished sweep run again with epochs=4 (another config) while a process holds the lock of
    beta=3's folder: each job refused with one line, and not a byte of a job folder changed."""
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(uninterrupted, sweep_dir)
    before = {path: path.read_bytes() for path in sweep_dir.glob("beta=*/**/*") if path.is_file()}
    folder = os.open(sweep_dir / "beta=3", os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)  # this process at work in beta=3, as a job would be
    try:
        result = run_sweep(sweep_dir, "beta=1,2,3", *JOB, "epochs=4")
    finally:
        os.close(folder)
    assert result.returncode == 1
    refusals = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert refusals == [f"error: job {n} (beta={n + 1}): refused, {sweep_dir}/beta={n + 1} holds a run with another config "
                        "(epochs is 3 there, 4 here); nothing in it was changed" for n in (0, 1)] + [
                        f"error: job 2 (beta=3): refused, {sweep_dir}/beta=3 is in use by another process (a job of this "
                        "sweep, run twice?); nothing in it was changed"]
    assert {job: outcome for job, (outcome, _) in outcome_table(result.stdout).items()} == {
        "beta=1": "refused", "beta=2": "refused", "beta=3": "refused"}
    assert {path: path.read_bytes() for path in sweep_dir.glob("beta=*/**/*") if path.is_file()} == before


def test_job_folders_are_named_by_what_the_sweep_sweeps():
    assert folder_name(["beta=8", "epochs=3", "z_dim=2"], ["beta", "z_dim"]) == "beta=8,z_dim=2"
    assert folder_name(["+experiment=conv_mse_z2_beta", "beta=16"], ["beta"]) == "beta=16"
    assert folder_name(["data.path=/x/y.npz", "seed=0"], ["data.path"]) == "data.path=%2Fx%2Fy.npz"
    assert folder_name(["epochs=3"], []) == "run"
    assert len(folder_name([f"model.hidden=[{','.join(['512'] * 100)}]"], ["model.hidden"])) < 200


@pytest.mark.parametrize("argv, line", [
    (["status", "{tmp}/missing"], "error: {tmp}/missing: no such folder"),
    (["status", "{tmp}"], "error: {tmp}: not a sweep folder (no multirun.yaml and no job folders, which python train.py -m writes)"),
    (["stats", "{tmp}"], "error: usage: python -m vae_lab.sweep status <sweep folder>"),
    ([], "error: usage: python -m vae_lab.sweep status <sweep folder>"),
])
def test_status_of_a_folder_that_is_not_a_sweep_is_one_line(argv, line, tmp_path):
    with pytest.raises(SystemExit) as refusal:
        sweep_main([arg.format(tmp=tmp_path) for arg in argv])
    assert str(refusal.value.code).startswith(line.format(tmp=tmp_path)) and "\n" not in str(refusal.value.code)
