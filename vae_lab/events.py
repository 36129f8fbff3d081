"""A run's TensorBoard event files, where a resume in the run's own folder meets them.

A run killed during epoch e leaves events of that epoch in its files, past the state its
``last.ckpt`` holds (the end of epoch e - 1); resumed in the same folder, it logs epoch e again,
and a reader would see those steps twice. So ``RunCheckpoints`` marks in the events where each
training epoch begins (``mark_epoch``), after everything logged for the epoch before it, and a
resume cuts the files at the mark of its checkpoint's step (``cut_after_mark``): the curve then
goes on exactly as the killed run's would have, no step twice.

An event file is a sequence of TFRecords (TensorFlow's framing: an 8-byte length, a 4-byte check,
the data, a 4-byte check), each an ``Event`` protobuf; the mark is an ``Event`` holding a
``SessionLog`` of status CHECKPOINT, which TensorBoard's readers skip.
"""
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event, SessionLog

PATTERN = "events.out.tfevents.*"
MARK = "vae_lab: epoch starts; the events before this belong to checkpoints/last.ckpt"


def mark_epoch(logger, step: int) -> None:
    """Write the mark of an epoch that starts at optimizer step ``step`` into ``logger``'s events
    (a Lightning ``TensorBoardLogger``; any other logger, or none, is left alone)."""
    writer = getattr(logger, "experiment", None)
    if not hasattr(writer, "_get_file_writer"):  # not torch's SummaryWriter
        return
    log = SessionLog(status=SessionLog.CHECKPOINT, checkpoint_path="checkpoints/last.ckpt", msg=MARK)
    writer._get_file_writer().add_event(Event(session_log=log), step=step)


def records(path: Path) -> Iterator[tuple[int, Event]]:
    """(offset just after it, event) for each whole record of an event file; a record torn by a
    kill mid-write ends the file."""
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return
            yield f.tell(), Event.FromString(data)


def is_mark(event: Event, step: int) -> bool:
    return (event.WhichOneof("what") == "session_log" and event.session_log.status == SessionLog.CHECKPOINT
            and event.session_log.msg == MARK and event.step == step)


def cut_after_mark(folder: Path, step: int) -> int:
    """Cut the event files in ``folder`` just after the last mark of an epoch starting at ``step``
    (the global step of the checkpoint a resume starts from): what follows it was logged by the
    epoch the resume trains again. Files after that one hold only later attempts' events and are
    emptied to their first record (the file's version). Without such a mark nothing of the next
    epoch was logged, and only a record torn by the kill is cut. Returns how many events were cut.
    """
    files = sorted(folder.glob(PATTERN))
    found = {path: list(records(path)) for path in files}
    marks = [(index, end) for index, path in enumerate(files) for end, event in found[path] if is_mark(event, step)]
    cut = 0
    for index, path in enumerate(files):
        ends = [end for end, _ in found[path]]
        keep = ends[-1] if ends else 0  # whole records only
        if marks and index == marks[-1][0]:
            keep = marks[-1][1]
        elif marks and index > marks[-1][0]:
            keep = ends[0] if ends else 0
        cut += sum(end > keep for end in ends)
        if keep < path.stat().st_size:
            os.truncate(path, keep)
    return cut
