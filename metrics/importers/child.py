"""The parser process: ``parse(job)`` (see parse.py) run in a second Python process while
this one writes, so that on two cores parsing and inserting overlap.

The hand-off: the parent starts ``python -c`` on the very ``metrics`` it runs, writes the
pickled :class:`ParseJob` to the child's stdin and reads pickled messages from its
stdout: parse()'s own ("campaign", "rows", "done"), and two the child sends in place of
raising, which the parent raises again:
    ("rejected", message, file, errors, total_errors)   an ImportRejected
    ("failed", message)                                  any other error
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Iterator

from ..errors import ImportRejected, KpiBotError
from .parse import ParseJob, parse


def parse_in_child(job: ParseJob) -> Iterator[tuple]:
    """``parse(job)`` run in a second Python process, its messages read from a pipe."""
    # The very `metrics` this process runs, whatever the working directory holds.
    root = str(Path(__file__).resolve().parents[2])
    boot = (f"import sys; sys.path.insert(0, {root!r}); "
            "from metrics.importers.child import child_main; child_main()")
    proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        pickle.dump(job, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.close()
        while True:
            try:
                message = pickle.load(proc.stdout)
            except EOFError:
                raise KpiBotError("the import's parser process stopped unexpectedly "
                                  f"(exit code {proc.wait()}); nothing was imported") from None
            kind = message[0]
            if kind == "rejected":
                raise ImportRejected(message[1], file=message[2], errors=message[3],
                                     total_errors=message[4])
            if kind == "failed":
                raise KpiBotError(message[1])
            yield message
            if kind == "done":
                return
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def child_main() -> None:
    """The second process: a pickled job on stdin,
    pickled messages on stdout; errors become messages too."""
    out = sys.stdout.buffer

    def send(message: tuple) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        job = pickle.load(sys.stdin.buffer)
        for message in parse(job):
            send(message)
    except ImportRejected as exc:
        send(("rejected", exc.args[0], exc.file, exc.errors, exc.total_errors))
    except KpiBotError as exc:
        send(("failed", str(exc)))
    except BrokenPipeError:   # the parent went away
        os._exit(1)
    except BaseException as exc:  # a bug: say where; the parent raises it
        send(("failed", "the parser failed: " + "".join(
            traceback.format_exception_only(type(exc), exc)).strip()
            + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])))
    out.flush()
    os._exit(0)   # skip interpreter teardown: the parent has what it needs
