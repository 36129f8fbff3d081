"""Crashes, bad checkpoints and runaway losses on short real trainings; see docs/reliability.md."""
import ctypes
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

import vae_lab
from conftest import DATA_ROOT, REPO, SHORT_RUN, TINY_RUN, make_config, run_sweep, run_train, scalars
from vae_lab.runs import load_checkpoint
from vae_lab.training.callbacks import AtomicCheckpointIO
from vae_lab.errors import VaeLabError
from vae_lab.evaluate import main as evaluate_main
from vae_lab.generate import main as generate_main
from vae_lab.training.module import LitVAE
from vae_lab.registry import MODELS
from vae_lab.training import train


@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory, data_root):
    """last.ckpt of a one-epoch dense run (z_dim=20)."""
    run_dir = tmp_path_factory.mktemp("dense")
    train(make_config(run_dir, "epochs=1", *TINY_RUN))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("binarize", ["none", "dynamic"])  # dynamic: a fresh draw every step
def test_killed_run_resumes_to_the_same_weights_and_metrics_as_an_uninterrupted_one(binarize, tmp_path, data_root):
    epochs, steps = 5, 20
    overrides = [f"epochs={epochs}", f"data.binarize={binarize}", *SHORT_RUN, f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=2"]
    whole = run_train(*overrides, run_dir=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    last = killed_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "train.py", *overrides, f"hydra.run.dir={killed_dir}"], cwd=REPO,
        env={**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # kill it as soon as the second epoch's checkpoint is there; saves are atomic, so reading is safe
    while not (last.exists() and torch.load(last, weights_only=True)["global_step"] >= 2 * steps):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert load_checkpoint(last)["global_step"] < epochs * steps  # it really was cut short

    resumed = run_train(*overrides, f"ckpt_path={last}", run_dir=tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, found = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
                       for run in ("whole", "resumed"))
    assert found["global_step"] == expected["global_step"] == epochs * steps
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(found["state_dict"][name], tensor), name
    for name, tensor in expected["optimizer_states"][0]["state"][0].items():
        assert torch.equal(found["optimizer_states"][0]["state"][0][name], tensor), name
    whole_scalars, resumed_scalars = scalars(tmp_path / "whole"), scalars(tmp_path / "resumed")
    for tag in ("val/loss", "train/loss_epoch"):
        assert resumed_scalars[tag][-1] == whole_scalars[tag][-1], tag  # same (step, value)


def test_a_save_killed_midway_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)

    def dies_midway(checkpoint, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands in for SIGKILL during the write

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}


def test_a_new_run_never_writes_into_another_runs_folder(tmp_path):
    run_dir = tmp_path / "earlier"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("beta: 4.0\n")
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"the earlier run's weights")
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}

    result = run_train("epochs=1", run_dir=run_dir)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: output_dir={run_dir} already holds a run (config.yaml, checkpoints)")
    assert {path: path.read_bytes() for path in before} == before
    assert {path.name for path in run_dir.iterdir()} == {"config.yaml", "checkpoints", ".hydra", "train.log"}


def test_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, data_root):
    losses = LitVAE._losses

    def nan_from_step_7(self, batch, epoch):
        terms, mu, logvar = losses(self, batch, epoch)
        if self.training and self.global_step >= 7:
            terms["loss"] = terms["loss"] * float("nan")
        return terms, mu, logvar

    monkeypatch.setattr(LitVAE, "_losses", nan_from_step_7)
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(VaeLabError, match=rf"training loss became nan at step 7 \(epoch 1\); stopped, "
                                          rf"last good checkpoint: {last}; try a lower lr"):
        train(make_config(tmp_path, "epochs=3", *TINY_RUN))
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 5  # the end of epoch 0, not written again after the NaN
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    assert sorted(path.name for path in last.parent.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("training loss became nan at step 7")
    assert summary["global_step"] == 7 and "final" not in summary


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch, data_root):
    def poison_after_last_batch(self, outputs, batch, batch_idx):
        if self.global_step == 5:  # after the last step of epoch 0, before its checkpoint
            next(self.parameters()).data.fill_(float("inf"))

    monkeypatch.setattr(LitVAE, "on_train_batch_end", poison_after_last_batch, raising=False)
    with pytest.raises(VaeLabError, match=r"weights became non-finite by step 5 \(epoch 0\); stopped without "
                                          r"saving, no checkpoint was saved yet"):
        train(make_config(tmp_path, "epochs=2", *TINY_RUN))
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


def test_absurd_lr_fails_its_run_and_the_rest_of_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep("lr=1e6,1e-3", "epochs=1", *TINY_RUN, sweep_dir=sweep)
    assert result.returncode != 0
    assert "error: training loss became nan at step 1 (epoch 0); stopped, no checkpoint was saved yet" in result.stderr
    assert not (sweep / "0" / "checkpoints").exists()  # job 0 (lr=1e6) failed first ...
    assert torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5  # ... job 1 ran


def crafted_checkpoint(path, marker):
    """A checkpoint whose unpickling writes the file marker: what a malicious download could do."""

    class WritesAFile:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran code')",)

    torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}, "epoch": WritesAFile(), "global_step": 0}, path)


def test_a_checkpoint_crafted_to_run_code_is_refused(tmp_path):
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    crafted_checkpoint(evil, marker)
    torch.load(evil, weights_only=False)  # the exploit is real: a plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    result = run_train(f"ckpt_path={evil}", *TINY_RUN, run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {evil}: refused, loading it would call builtins.exec; a checkpoint holds only tensors "
        "and plain values (loaded with weights_only=True)")
    # Lightning's own loading goes through the same check, whatever it asks for
    with pytest.raises(VaeLabError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


BAD_CHECKPOINTS = {
    "truncated": ("half", "not a readable checkpoint (truncated or corrupt)"),
    "empty": ("empty", "not a readable checkpoint (truncated or corrupt)"),
    "corrupt": ("flipped", "not a readable checkpoint (truncated or corrupt)"),
    "a tensor, not a checkpoint": ("tensor", "not a vae_lab training checkpoint (no state_dict, optimizer_states"),
    "another model": ("model=conv", "holds weights of model dense (z_dim=20), which do not fit "
                                    "the configured model conv (z_dim=20)"),
    "another z_dim": ("z_dim=2", "holds weights of model dense (z_dim=20), which do not fit "
                                 "the configured model dense (z_dim=2)"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoint_gives_one_line_naming_the_file(case, dense_checkpoint, tmp_path):
    how, message = BAD_CHECKPOINTS[case]
    data, path, overrides = dense_checkpoint.read_bytes(), tmp_path / "bad.ckpt", []
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flipped":  # the zip's central directory at the end of the file, overwritten
        path.write_bytes(data[:-200] + bytes(200))
    elif how == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path, overrides = dense_checkpoint, [how]
    with pytest.raises(VaeLabError) as error:
        train(make_config(tmp_path / "run", f"ckpt_path={path}", *overrides, *TINY_RUN))
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def hostile_checkpoints(dense_checkpoint, folder):
    """Real checkpoints whose stored run config (Lightning's hyper_parameters) names code, each with
    the line it must be refused with, the marker file its payload would write and the victim file
    it would change or delete."""
    marker, victim = folder / "marker", folder / "victim.txt"
    victim.write_text("the user's file\n")

    class WritesTheMarker:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran code')",)

    payloads = {
        "os.system": {"_target_": "os.system", "command": f"touch {marker}"},
        "builtins.open": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
        "pathlib.Path.unlink": {"_target_": "pathlib.Path.unlink",
                                "self": {"_target_": "pathlib.Path", "_args_": [str(victim)]}},
        # the pickle as a list of byte values, turned back into bytes by a nested _target_ (a list of
        # ints passes every torch version's weights-only unpickler; raw bytes do not in all)
        "torch.load": {"_target_": "torch.load", "weights_only": False,
                       "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "builtins.bytes",
                                                                         "_args_": [list(pickle.dumps(WritesTheMarker()))]}}},
        "an unknown model": {"name": "transformer", "z_dim": 20},
    }
    checkpoint = torch.load(dense_checkpoint, weights_only=True)
    cases = {}
    for name, payload in payloads.items():
        path = folder / f"{name.replace(' ', '_')}.ckpt"
        torch.save({**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], "model": payload}}, path)
        registered = ", ".join(MODELS.names())  # vae_lab's own models and any a test of this session registered
        reason = (f"model.name=transformer is not a registered model (registered: {registered}); a component of "
                  "your own is loaded with plugins=[your.module]" if name == "an unknown model"
                  else f"model._target_={name} names code; a model is chosen by model.name, one of {registered}")
        cases[name] = (path, f"error: {path}: refused: {reason}")
    return cases, marker, victim


def test_a_checkpoint_whose_config_names_code_is_refused_by_every_tool(dense_checkpoint, tmp_path):
    cases, marker, victim = hostile_checkpoints(dense_checkpoint, tmp_path)
    assert torch.load(cases["torch.load"][0], weights_only=True)  # each passes the weights-only unpickler
    before = sorted(p.name for p in tmp_path.iterdir())

    def refused_line(command, *args):
        with pytest.raises(SystemExit) as exit:
            command(list(args))
        return str(exit.value.code)

    for name, (path, line) in cases.items():
        assert refused_line(generate_main, f"run={path}", f"out={tmp_path / 'generated'}") == line, name
        assert refused_line(evaluate_main, f"run={path}", "n_samples=0", f"out={tmp_path / 'metrics.json'}") == line, name
        with pytest.raises(VaeLabError) as error:  # resuming from it
            train(make_config(tmp_path / "run", f"ckpt_path={path}", *TINY_RUN))
        assert f"error: {error.value}" == line, name
        assert not marker.exists() and victim.read_text() == "the user's file\n", name
        assert sorted(p.name for p in tmp_path.iterdir()) == before, name  # nothing was written

    # and as a user runs the tools: one line, no traceback
    path, line = cases["os.system"]
    env = {**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)}
    for command in (["-m", "vae_lab.generate", f"run={path}"], ["-m", "vae_lab.evaluate", f"run={path}", "n_samples=0"],
                    ["train.py", f"ckpt_path={path}", *TINY_RUN, f"hydra.run.dir={tmp_path / 'run'}"]):
        result = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == line
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def rising_run(output_dir, *overrides) -> subprocess.CompletedProcess:
    """tests/rising_probe.py: validation loss rises after the first epoch (5 steps an epoch)."""
    return subprocess.run([sys.executable, "tests/rising_probe.py", str(output_dir), *overrides, *TINY_RUN],
                          cwd=REPO, env={**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)},
                          capture_output=True, text=True, timeout=300)


def best_score(checkpoint: dict) -> float:
    """The best val/loss the checkpoint callback had seen when this checkpoint was written."""
    (state,) = [s for s in checkpoint["callbacks"].values() if "best_model_score" in s]
    return float(state["best_model_score"])


def test_last_checkpoint_is_the_last_epoch_even_when_validation_gets_worse(tmp_path):
    result = rising_run(tmp_path, "epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    val_loss = [value for _, value in scalars(tmp_path)["val/loss"]]  # at step 0, then after each epoch
    assert val_loss[1] < val_loss[2] < val_loss[3], val_loss  # the first epoch stays the best
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 15 and last["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "best-epoch00.ckpt")["global_step"] == 5


def test_a_run_killed_after_a_worse_epoch_resumes_from_it_and_keeps_its_best(tmp_path):
    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    result = rising_run(killed, "--die-at-epoch", "2", "epochs=4")
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    last = killed / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 10  # both finished epochs, the worse one included

    result = rising_run(resumed, "epochs=4", f"ckpt_path={last}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert min(step for step, _ in scalars(resumed)["train/loss"]) == 10  # it went on from the last epoch
    assert load_checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] == 20
    # the best over the whole run, resumes included: epoch 0's, carried into the new folder
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]
    earlier, carried = (load_checkpoint(run / "checkpoints" / "best-epoch00.ckpt") for run in (killed, resumed))
    assert all(torch.equal(carried["state_dict"][k], v) for k, v in earlier["state_dict"].items())
    assert best_score(load_checkpoint(resumed / "checkpoints" / "last.ckpt")) == best_score(load_checkpoint(last))
    assert "dirpath has changed" not in result.stderr


@pytest.mark.parametrize("edit", [{"z_dim": 1_000_000_000_000}, {"hidden": [1_099_511_627_776, 2]}])
def test_absurd_sizes_in_a_stored_config_are_refused_before_anything_is_built(edit, dense_checkpoint, tmp_path):
    checkpoint = torch.load(dense_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["model"] = {**checkpoint["hyper_parameters"]["model"], **edit}
    path = tmp_path / "big.ckpt"
    torch.save(checkpoint, path)
    line = f"error: {path}: refused, its run config does not describe its weights (model dense, first mismatch at "
    for command, args in ((generate_main, ["n=4"]), (evaluate_main, ["k=2", "n_images=10", "n_samples=0"])):
        with pytest.raises(SystemExit) as exit:
            command([f"run={path}", *args])
        assert str(exit.value.code).startswith(line) and "\n" not in str(exit.value.code)
    with pytest.raises(VaeLabError, match="does not describe its weights"):
        vae_lab.load_run(path).model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.ckpt"]  # nothing written beside it


def test_a_checkpoint_outside_a_run_folder_gets_its_results_beside_it(dense_checkpoint, tmp_path):
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    loose = downloads / "model.ckpt"
    loose.write_bytes(dense_checkpoint.read_bytes())
    evaluate_main([f"run={loose}", "k=2", "n_images=20", "n_samples=0"])
    generate_main([f"run={loose}", "n=4"])
    assert sorted(p.name for p in downloads.iterdir()) == ["model-generated", "model-metrics.json", "model.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Downloads"]  # nothing above the file's folder
    run = vae_lab.load_run(loose)
    assert run.folder == downloads and run.metrics["n_images"] == 20 and run.samples(n=4).size == (62, 62)


def test_evaluate_never_replaces_a_metrics_file_unless_told_to(dense_checkpoint, tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(dense_checkpoint.read_bytes())
    metrics, quick = tmp_path / "model-metrics.json", ["n_samples=0", "disentanglement=false"]
    evaluate_main([f"run={checkpoint}", "k=2", "n_images=20", *quick])
    first = metrics.read_bytes()
    line = (f"error: {metrics} already holds the metrics of k=2 over 20 test images; write these elsewhere with "
            "out=FILE, or replace it with overwrite=true")
    for args in (["k=3", "n_images=30", *quick], ["k=2", "n_images=20", *quick],  # the same measurement too
                 ["k=1", "n_samples=10", "sampler=gmm"]):  # refused before the mixture is fitted and saved
        with pytest.raises(SystemExit) as refusal:
            evaluate_main([f"run={checkpoint}", *args])
        assert str(refusal.value.code) == line
    assert metrics.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir()) == ["model-metrics.json", "model.ckpt"]

    with pytest.raises(SystemExit) as refusal:
        evaluate_main([f"run={checkpoint}", "k=3", "overwrite=maybe"])
    assert str(refusal.value.code) == "error: overwrite=maybe must be true or false"
    run = vae_lab.load_run(checkpoint)
    beside = run.evaluate(k=4, n_images=40, n_samples=0, disentanglement=False, out=tmp_path / "k4.json")
    assert beside["iwae_k"] == 4 and json.loads((tmp_path / "k4.json").read_text()) == beside
    assert metrics.read_bytes() == first
    with pytest.raises(VaeLabError, match="already holds the metrics of k=4 over 40 test images"):
        run.evaluate(k=5, n_images=20, n_samples=0, disentanglement=False, out=tmp_path / "k4.json")
    assert run.evaluate(k=3, n_images=30, n_samples=0, disentanglement=False, overwrite=True)["iwae_k"] == 3
    assert json.loads(metrics.read_text())["iwae_k"] == 3 == run.metrics["iwae_k"]

    metrics.write_text("[1, 2")  # not what evaluate writes: still a file, still kept
    with pytest.raises(SystemExit) as refusal:
        evaluate_main([f"run={checkpoint}", "k=2", *quick])
    assert str(refusal.value.code).startswith(f"error: {metrics} already holds a file; ")
    assert metrics.read_text() == "[1, 2"


SUBNORMALS = "x = torch.full((2 ** 24,), 1e-39)"  # a parallel fill: 16M subnormal floats
LEFT = "print('left', int(((x * 1.0) != 0).sum()))"  # how many a parallel product kept
TRAINING_FLUSHES = f"""import sys, torch
from lightning.pytorch.callbacks import Callback
from conftest import TINY_RUN, make_config
from vae_lab.cli import exit_on_error
from vae_lab.training import train

class Check(Callback):
    def on_train_start(self, *args):
        {SUBNORMALS}; {LEFT}

if sys.argv[2] == "train":  # what python train.py runs, in a process that has not started torch's threads
    train(make_config(sys.argv[1], "epochs=1", *TINY_RUN, "trainer.limit_train_batches=1"), [Check()])
else:  # what python -m vae_lab.generate|evaluate|classifier|morphometrics runs
    exit_on_error(lambda: Check().on_train_start())
"""


def test_every_intra_op_thread_flushes_subnormals_in_the_command_lines_and_in_this_process(tmp_path):
    # A thread pool started before torch.set_flush_denormal keeps computing with subnormals in its
    # worker threads: a share of every large result would then depend on which thread computed it.
    # Two threads even where the tests run one per worker (conftest.py), or there would be no other thread to check.
    two_threads = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    started_first = subprocess.run([sys.executable, "-c", f"import torch; {SUBNORMALS}; torch.set_flush_denormal(True); {LEFT}"],
                                   capture_output=True, text=True, env=two_threads)
    assert int(started_first.stdout.split()[-1]) > 0  # the fault this guards against is real on this machine
    for command in ("train", "tool"):
        result = subprocess.run([sys.executable, "-c", TRAINING_FLUSHES, str(tmp_path / command), command], cwd=REPO / "tests",
                                capture_output=True, text=True, env=two_threads)
        assert result.returncode == 0, result.stderr[-3000:]
        assert [line for line in result.stdout.splitlines() if line.startswith("left")] == ["left 0"], result.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.full((2 ** 24,), 1e-39)
        assert int(((x * 1.0) != 0).sum()) == 0  # the test process, where trainings run in-process too
    finally:
        torch.set_num_threads(threads)


TORCH_CPU = f"{torch.__path__[0]}/lib/libtorch_cpu.so"  # on Linux, MKL is linked into it
REPORTS_MKL_DYNAMIC = f"""import ctypes, sys
from lightning.pytorch.callbacks import Callback
from conftest import TINY_RUN, make_config
from vae_lab.training import train

dynamic = ctypes.CDLL("{TORCH_CPU}").mkl_serv_get_dynamic

class Report(Callback):
    def on_train_batch_start(self, *args):
        print("mkl_dynamic", dynamic())

print("mkl_dynamic", dynamic())
train(make_config(sys.argv[1], "epochs=1", *TINY_RUN, "trainer.limit_train_batches=1"), [Report()])
"""


def test_a_training_fixes_how_many_threads_mkl_uses(tmp_path):
    # Intel's reproducibility conditions for MKL: a fixed thread count, MKL_DYNAMIC off; it is on in
    # a process that never called torch.set_num_threads, as every vae_lab command line is.
    if not (os.path.isfile(TORCH_CPU) and hasattr(ctypes.CDLL(TORCH_CPU), "mkl_serv_get_dynamic")):
        pytest.skip("this torch has no MKL to ask")
    result = subprocess.run([sys.executable, "-c", REPORTS_MKL_DYNAMIC, str(tmp_path)], cwd=REPO / "tests",
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    before, during = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("mkl_dynamic")]
    assert (before, during) == ("1", "0")  # on before the run (the fault is real here), off while it trains
