"""Sweeps that survive a crash: the same ``python train.py -m`` command, into the same sweep
folder, finishes a sweep that was killed or had a job fail.

    python train.py -m beta=1,3,8,16 hydra.sweep.dir=outputs/sweeps/<date_time>   # again: finishes it
    python -m vae_lab.sweep status outputs/sweeps/<date_time>   # each job: finished, failed, running, killed, not started
    vae-lab sweep status outputs/sweeps/<date_time>             # the same

A job's folder is named by the values it takes of what the sweep sweeps (``beta=8``,
``beta=8,z_dim=2``: ``hydra.sweep.subdir`` is ``${vae_lab.job_folder:}``), so it stays the job's
folder when the grid grows. When a job starts (``run_job``), its folder decides what it does:

- nothing of a run there yet: it trains;
- its record (``job.json``) says finished, for the same config: skipped with one line, its results kept;
- the same config, not finished (killed, or failed): it goes on from its own ``checkpoints/last.ckpt``
  in the same folder, bit-exact with a run never interrupted, its TensorBoard events cut where
  that checkpoint was taken (``vae_lab.events``); with no checkpoint yet, it trains from the start;
- another config, a run no sweep job started, or another process at work in it: refused with one
  line, nothing in the folder changed.

The record is written atomically (``vae_lab.io.write_json``), ``"status": "finished"`` after
everything the run writes. A failing job never stops the sweep: its error goes to the record, its
``train.log`` and the console, and the other jobs train. Each job also writes what it did into a
folder the launching process gave it (``$VAE_LAB_SWEEP_OUTCOMES``: the joblib launcher runs the
jobs in other processes), from which that process, once Hydra returns, prints one table
(``end_of_sweep``) and exits with status 1 if a job failed or was refused.
"""
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import math
import os
import shlex
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_lab.config import RUN_FILES, check_config
from vae_lab.errors import VaeLabError
from vae_lab.io import write_atomically, write_json

RECORD = "job.json"  # a job's record, in its folder
SUMMARY_FILE = "summary.json"  # the run's own record (vae_lab.runs.SUMMARY_FILE, read here without importing torch)
OUTCOMES = "VAE_LAB_SWEEP_OUTCOMES"  # a folder of this machine where each job writes <job number>.json: what it did
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
log = logging.getLogger(__name__)


# Job folders --------------------------------------------------------------------------------------

def parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def sweep_arguments(master: DictConfig) -> list[str]:
    """What the basic sweeper sweeps over, as it reads it: ``hydra.sweeper.params``, then the
    command line's overrides (a later setting of a key replaces an earlier one)."""
    params = master.hydra.sweeper.get("params")
    params = {} if params is None else OmegaConf.to_container(params, resolve=False)
    return [f"{key}={value}" for key, value in params.items()] + list(
        OmegaConf.to_container(master.hydra.overrides.task, resolve=False))


def swept_keys(master: DictConfig) -> list[str]:
    """The keys a sweep sweeps (those set to several values), sorted."""
    last = {override.key_or_group: override for override in parse(sweep_arguments(master))}
    return sorted(key for key, override in last.items() if override.is_sweep_override())


def folder_name(overrides: list[str], swept: list[str]) -> str:
    """``key=value,...`` of the swept keys (``run`` when nothing is swept), safe as one folder name:
    ``%`` and ``/`` escaped, a name too long for a file system shortened and told apart by a hash."""
    values = {override.key_or_group: override.get_value_element_as_str() for override in parse(overrides)}
    name = ",".join(f"{key}={values.get(key, '')}" for key in swept) or "run"
    name = name.replace("%", "%25").replace("/", "%2F")
    if len(name.encode()) > 200:  # most file systems allow 255 bytes
        name = f"{name[:150]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"
    return name


def job_folder() -> str:
    """``hydra.sweep.subdir``: this job's folder name (``folder_name``), from the sweep the basic
    sweeper saved in ``multirun.yaml`` before it launched the jobs. Other sweepers (Optuna) choose
    each job's values as they go: their jobs are named by their number, as Hydra does."""
    hydra = HydraConfig.get()
    master = Path(hydra.sweep.dir) / "multirun.yaml"
    if hydra.sweeper.get("_target_") == BASIC_SWEEPER and master.is_file():
        overrides = OmegaConf.to_container(hydra.overrides.task, resolve=False)
        with contextlib.suppress(Exception):  # an error here would end the whole sweep
            return folder_name(overrides, swept_keys(OmegaConf.load(master)))
    # outside a sweep (python train.py --cfg all --resolve) there is no job number to name it by
    return str(OmegaConf.select(hydra, "job.num", default="run", throw_on_missing=False))


OmegaConf.register_new_resolver("vae_lab.job_folder", job_folder, replace=True)


def grid(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides, in job order, as the basic sweeper launches them (from the sweep's
    ``multirun.yaml``); None when the sweep is not a grid (Optuna) or there is no such file."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    try:
        master = OmegaConf.load(sweep_dir / "multirun.yaml")
        if master.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return None
        (jobs,) = BasicSweeper.split_arguments(parse(sweep_arguments(master)), None)  # Hydra's own expansion
        return jobs
    except Exception:  # a damaged or foreign file: the status then shows the job folders alone
        return None


# Records ------------------------------------------------------------------------------------------

def read_json(path: Path) -> dict | None:
    """A JSON object from path, or None if there is none (or it is not one)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def flat(config, prefix: str = "") -> dict:
    """{"a.b": value} for every leaf of a nested dict."""
    if isinstance(config, dict) and config:
        return {key: value for name, child in config.items() for key, value in flat(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): config}


def difference(theirs: dict, ours: dict) -> str:
    """The first setting in which two configs differ, in words."""
    theirs, ours = flat(theirs), flat(ours)
    key = next((key for key in sorted(set(theirs) | set(ours)) if key not in theirs or key not in ours
                or theirs[key] != ours[key]), None)
    if key is None:
        return "its config differs"
    shown = [json.dumps(config[key]) if key in config else "unset" for config in (theirs, ours)]
    return f"{key} is {shown[0]} there, {shown[1]} here"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[bool]:
    """Whether this process holds the job folder's lock (an flock on the folder itself, which
    ends with the process however it ends), waiting up to a second for a status check to let go."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(10):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.1)
        else:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def busy(folder: Path) -> bool:
    """Whether a live process holds the job folder's lock (a job at work in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the shared lock


# One job ------------------------------------------------------------------------------------------

def run_job(cfg: DictConfig) -> float:
    """Run one job of a sweep (what ``python train.py -m`` runs for each job) as the module
    docstring says. Returns its final val/loss per sample (the recorded one when skipped), nan when
    it failed or was refused: the basic sweeper's jobs never raise, so the sweep goes on and ends
    with the table (``end_of_sweep``); under another sweeper (Optuna), a failed job raises its one
    line, which that sweeper records as a failed trial."""
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    job = {"job": folder.name, "number": hydra.job.num, "folder": shown(folder), "sweep": str(hydra.sweep.dir),
           "overrides": OmegaConf.to_container(hydra.overrides.task, resolve=False)}
    started = time.time()
    with locked(folder) as ours:
        if ours:
            outcome = attempt(cfg, folder, job)
        else:  # Hydra just rewrote the other process's .hydra/ files: put them back
            restore(folder, read_json(folder / RECORD) or {})
            outcome = refuse(job, f"{shown(folder)} is in use by another process (a job of this sweep, run twice?)")
    outcome = {**job, "seconds": round(time.time() - started, 1), **outcome}
    outcomes = os.environ.get(OUTCOMES)
    if outcomes and Path(outcomes).is_dir():  # not when the job runs on another machine (SLURM)
        write_json(outcome, Path(outcomes) / f"{job['number']}.json")
    if outcome["outcome"] in ("failed", "refused") and hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        raise VaeLabError(outcome["reason"])  # a sweeper that chooses as it goes (Optuna) counts a failed trial itself
    return outcome["val_loss"] if outcome.get("val_loss") is not None else math.nan


def refuse(job: dict, reason: str) -> dict:
    print(f"error: job {job['number']} ({job['job']}): refused, {reason}; nothing in it was changed", file=sys.stderr)
    return {"outcome": "refused", "reason": reason}


def hydra_files(folder: Path) -> dict:
    """Hydra's record of this attempt (``.hydra/*.yaml``), which Hydra rewrites before a job starts."""
    subdir = HydraConfig.get().output_subdir
    return {} if subdir is None else {str(p.relative_to(folder)): p.read_text() for p in (folder / subdir).glob("*.yaml")}


def restore(folder: Path, record: dict) -> None:
    """Hydra's files of the run the record describes, back as they were (a skipped or refused job
    leaves its folder as it found it)."""
    subdir = HydraConfig.get().output_subdir
    for name, text in (record.get("hydra") or {}).items():
        if Path(name).parts[:1] == (subdir,) and len(Path(name).parts) == 2 and name.endswith(".yaml") and isinstance(text, str):
            write_atomically(folder / name, lambda f, text=text: f.write(text.encode()))


def attempt(cfg: DictConfig, folder: Path, job: dict) -> dict:
    """What a job does in its locked folder; returns its outcome (see ``run_job``)."""
    record = read_json(folder / RECORD)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # an interpolation that does not resolve: Hydra's own message
        return fail(folder, record, str(error).splitlines()[0])
    config.pop("output_dir", None)  # the folder itself, which may have moved
    if record is None and any((folder / name).exists() for name in RUN_FILES):
        return refuse(job, f"{shown(folder)} holds a run that no sweep job started there")
    if record is not None and record.get("config") != config:
        restore(folder, record)
        return refuse(job, f"{shown(folder)} holds a run with another config ({difference(record.get('config') or {}, config)})")
    summary = read_json(folder / SUMMARY_FILE) or {}
    if record is not None and record.get("status") != "finished" and summary.get("status") == "finished":
        # killed after the run finished, before its record said so: it is finished
        final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
        record = {**record, "status": "finished", "val_loss": final.get("val_loss")}
        write_json(record, folder / RECORD)
    if record is not None and record.get("status") == "finished":
        restore(folder, record)
        loss = record.get("val_loss")
        print(f"job {job['number']} ({job['job']}): finished before" + (f", val loss {loss:.2f}" if loss is not None else "")
              + "; skipped", flush=True)
        return {"outcome": "skipped", "val_loss": loss}

    earlier = record is not None
    record = {**job, "config": config, "status": "running", "error": None, "val_loss": None,
              "attempts": (record or {}).get("attempts", 0) + 1, "host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "log": "train.log",
              "hydra": hydra_files(folder)}
    write_json(record, folder / RECORD)
    try:
        check_config(cfg, own_folder=earlier)
        how, note = go_on(cfg, folder)
        if note:
            say(f"job {job['number']} ({job['job']}): {note}")
        from vae_lab.training import train  # torch and Lightning: not for a job that is skipped

        val_loss = train(cfg)
    except VaeLabError as error:
        return fail(folder, record, str(error))
    except Exception as error:  # a fault of the code, not of the input: the traceback goes to train.log
        log.info("%s", traceback.format_exc())
        return fail(folder, record, f"{type(error).__name__}: {' '.join(str(error).split())}")
    write_json({**record, "status": "finished", "val_loss": val_loss}, folder / RECORD)  # last of all
    return {"outcome": how, "val_loss": val_loss, "note": note}


def go_on(cfg: DictConfig, folder: Path) -> tuple[str, str | None]:
    """Set a job whose folder holds its own unfinished run to go on from its ``last.ckpt``, the
    TensorBoard events cut where that was saved; or, without a checkpoint to go on from, to train
    from the start, its events removed (the training logs them again). Returns (done or resumed,
    what it will do in words, None for a job that starts afresh)."""
    from vae_lab.events import PATTERN, cut_after_mark
    from vae_lab.runs import epochs_done, load_checkpoint

    # Lightning's notice that the checkpoints folder is not empty: it is this run's own
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    last = folder / "checkpoints" / "last.ckpt"
    if last.is_file():
        checkpoint = load_checkpoint(last)
        epoch, step = epochs_done(checkpoint), checkpoint["global_step"]
        if epoch < cfg.epochs:
            cut_after_mark(folder, step)
            with read_write(cfg), open_dict(cfg):
                cfg.ckpt_path = str(last)
            return "resumed", f"resuming from its checkpoints/last.ckpt, after epoch {epoch} of {cfg.epochs} (step {step})"
        # Lightning resumes a checkpoint of the last epoch to no training at all, skipping the
        # end-of-run work (pictures, evaluation, summary) the kill interrupted: train it again
        why = "its last epoch was saved, but not the end of its run"
    elif any((folder / name).exists() for name in RUN_FILES):
        why = "it was stopped before its first checkpoint"
    else:
        return "done", None
    for events in folder.glob(PATTERN):
        events.unlink()
    return "done", f"training again from the start: {why}"


def fail(folder: Path, record: dict | None, reason: str) -> dict:
    """A failed job: its one line on the console and in train.log, its record failed (when it started)."""
    log.error("error: %s", reason)
    if record is not None and record.get("status") == "running":
        write_json({**record, "status": "failed", "error": reason}, folder / RECORD)
    return {"outcome": "failed", "reason": reason, "log": shown(folder / "train.log")}


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when it lies inside it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def say(line: str) -> None:
    print(line, flush=True)
    log.info(line)  # into train.log too


# Tables -------------------------------------------------------------------------------------------

def table(rows: list[dict], state: str) -> str:
    """The rows (job number, job folder, state, val loss, note) as aligned columns of text."""
    def loss(value) -> str:
        return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"

    lines = [["job", "overrides", state, "val loss"]] + [[str(row["number"]), row["job"], row["state"], loss(row.get("val_loss"))]
                                                        for row in rows]
    notes = ["note"] + [row.get("note") or "" for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(4)]
    return "\n".join("  ".join([number.ljust(widths[0]), job.ljust(widths[1]), what.ljust(widths[2]),
                                loss.rjust(widths[3]), note]).rstrip()
                      for (number, job, what, loss), note in zip(lines, notes))


def counts(rows: list[dict]) -> str:
    found = {}
    for row in rows:
        found[row["state"]] = found.get(row["state"], 0) + 1
    return ", ".join(f"{number} {state}" for state, number in found.items())


def end_of_sweep(outcomes: Path) -> int | None:
    """In the process that launched a sweep, once Hydra returns: print the table of what its jobs
    did (done, skipped, resumed, failed, refused; not run, for those of the grid that wrote nothing
    into ``outcomes``) and return the exit status, 1 if a job did not end finished; None when no job
    wrote anything (no sweep ran, or its jobs ran on other machines)."""
    found = {o["number"]: o for o in map(read_json, sorted(outcomes.glob("*.json"))) if o and "number" in o}
    if not found:
        return None
    sweep_dir = Path(next(iter(found.values()))["sweep"])
    jobs = grid(sweep_dir) or []
    swept = swept_keys(OmegaConf.load(sweep_dir / "multirun.yaml")) if jobs else []
    rows = []
    for number in sorted(set(found) | set(range(len(jobs)))):
        outcome = found.get(number) or {"number": number, "job": folder_name(jobs[number], swept), "outcome": "not run"}
        note = outcome.get("note") or "; ".join(filter(None, [outcome.get("reason"), outcome.get("log") and f"log {outcome['log']}"]))
        rows.append({**outcome, "state": outcome["outcome"], "note": note})
    print(f"\nsweep {sweep_dir}: {counts(rows)}")
    print(table(rows, "outcome"), flush=True)
    unfinished = [row for row in rows if row["state"] not in ("done", "resumed", "skipped")]
    if unfinished:
        print(f"the same command again retries what did not finish; python -m vae_lab.sweep status {sweep_dir} shows where it stands")
    return 1 if unfinished else 0


def job_folders(sweep_dir: Path) -> dict[Path, tuple[list[str], dict]]:
    """Each job folder of a sweep: its overrides (from its record, or Hydra's ``.hydra/overrides.yaml``
    for a job without one) and its record ({} when it has none)."""
    found = {}
    for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        record = read_json(folder / RECORD) or {}
        overrides = record.get("overrides")
        if overrides is None and (folder / ".hydra" / "overrides.yaml").is_file():
            with contextlib.suppress(Exception):
                overrides = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml"), resolve=False)
        if record or isinstance(overrides, list):
            found[folder] = (list(overrides or []), record)
    return found


def status_rows(sweep_dir: Path) -> list[dict]:
    """One row per job of the sweep's grid (``multirun.yaml``), then one per other job folder,
    each with its state (``state_of``), or not started."""
    folders = job_folders(sweep_dir)
    jobs = grid(sweep_dir)  # None without multirun.yaml (an Optuna sweep has none)
    swept = swept_keys(OmegaConf.load(sweep_dir / "multirun.yaml")) if jobs is not None else []
    rows, seen = [], set()
    for number, overrides in enumerate(jobs or []):
        match = [f for f, (theirs, _) in folders.items() if sorted(theirs) == sorted(overrides) and f not in seen]
        name = folder_name(overrides, swept)
        if match:
            seen.add(match[0])
            rows.append(state_of(match[0], folders[match[0]][1], number))
        elif sweep_dir / name in folders:  # the job's folder holds a run of other settings
            seen.add(sweep_dir / name)
            rows.append({"number": number, "job": name, "state": "blocked", "note": "its folder holds a run with other "
                         "overrides, which the sweep refuses to touch (sweep into a new folder)"})
        else:
            rows.append({"number": number, "job": name, "state": "not started"})
    for folder in sorted(folders.keys() - seen):
        row = state_of(folder, folders[folder][1], "—" if jobs is not None else folders[folder][1].get("number", "—"))
        if jobs is not None:
            row["note"] = "; ".join(filter(None, ["not in the sweep's grid", row.get("note")]))
        rows.append(row)
    return rows


def state_of(folder: Path, record: dict, number) -> dict:
    """A job folder's state: finished, failed, running (a job holds its lock), killed (its record
    says running, no job holds it), not started (Hydra made the folder, nothing ran in it), or
    unfinished (a run with no job record: trained by another launcher, or by an older vae_lab)."""
    summary = read_json(folder / SUMMARY_FILE) or {}
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    log_file = f"log {shown(folder / str(record.get('log') or 'train.log'))}"
    row = {"number": number, "job": folder.name}
    if record.get("status") == "finished" or summary.get("status") == "finished":
        loss = record.get("val_loss")
        row.update(state="finished", val_loss=final.get("val_loss") if loss is None else loss)
    elif busy(folder):
        row.update(state="running", note=f"pid {record.get('pid')} on {record.get('host')}" if record else None)
    elif record.get("status") == "failed" or (not record and summary.get("status") == "failed"):
        row.update(state="failed", note=f"{record.get('error') or summary.get('error')}; {log_file}")
    elif not record:
        row.update(state="unfinished" if summary or (folder / "config.yaml").exists() else "not started",
                   note="no job.json: not a job of vae_lab's sweeps" if summary else None)
    else:
        resumable = (folder / "checkpoints" / "last.ckpt").is_file()
        row.update(state="killed", note=("re-running the sweep resumes it from checkpoints/last.ckpt" if resumable
                                         else "re-running the sweep trains it again (no checkpoint yet)") + f"; {log_file}")
    return row


def status(sweep_dir: Path) -> str:
    """The status table of a sweep folder, finished, running or killed, with the command that finishes it."""
    if not sweep_dir.is_dir():
        raise VaeLabError(f"{sweep_dir}: no such folder")
    rows = status_rows(sweep_dir)
    if not rows and not (sweep_dir / "multirun.yaml").is_file():
        raise VaeLabError(f"{sweep_dir}: not a sweep folder (no multirun.yaml and no job folders, which python train.py -m writes)")
    text = f"sweep {sweep_dir}: {counts(rows) or 'no jobs'}\n{table(rows, 'status')}"
    if (sweep_dir / "multirun.yaml").is_file() and any(row["state"] in ("failed", "killed", "not started")
                                                      and row["number"] != "—" for row in rows):
        text += f"\nto finish it: {resume_command(sweep_dir)}"
    return text


def resume_command(sweep_dir: Path) -> str:
    """The command line that launched the sweep, into the same folder."""
    master = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides
    hydra = [o for o in OmegaConf.to_container(master.hydra, resolve=False)
             if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    task = OmegaConf.to_container(master.task, resolve=False)
    return shlex.join(["python", "train.py", "-m", *task, *hydra, f"hydra.sweep.dir={sweep_dir}"])


USAGE = "python -m vae_lab.sweep status <sweep folder>   (or: vae-lab sweep status <sweep folder>)"


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    try:
        if len(arguments) != 2 or arguments[0] != "status":
            raise VaeLabError(f"usage: {USAGE}")
        print(status(Path(arguments[1])))
    except VaeLabError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
