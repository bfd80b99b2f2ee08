"""Run an example script and SIGKILL it at a chosen moment (the test hook of the fault tests).

    python tests/fault_injection.py EVENT:N SCRIPT [ARGS...]
    python tests/fault_injection.py --serve      # the tests' runner: see serve()

The script runs unchanged (``runpy``, as ``__main__``); this wrapper only wraps a few functions first and kills the
process (``SIGKILL``: no clean-up, no ``finally``) on the N-th occurrence (1-based) of ``EVENT``:

- ``step``     after the N-th optimizer step (a global ``torch.optim`` step hook);
- ``save``     inside a checkpoint write: Accelerate writes the N-th of its files (model, optimizer, scheduler)
  half of it, then the process dies (a torn write);
- ``state``    inside a checkpoint write: the loop's ``training_state`` files are written, nothing after them;
- ``seal``     inside a checkpoint write: every file is written, the completion marker is not;
- ``rename``   inside a checkpoint write: the marker is written, the folder not yet renamed into place;
- ``rotate``   inside ``--checkpoints_total_limit`` rotation: an old checkpoint is half deleted;
- ``best``     inside the fine-tuning's best-model write: the folder is written aside, not yet swapped in;
- ``timer``    N milliseconds after the script starts, whatever it is doing then.

The tests then resume with ``--resume_from_checkpoint latest`` and compare with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path

EVENTS = ("step", "save", "state", "seal", "rename", "rotate", "best", "timer")


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(event: str, count: int) -> None:
    """Arrange for the process to be killed at the ``count``-th ``event``."""
    if event not in EVENTS:
        raise SystemExit(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
    seen = {"n": 0}

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] == count

    if event == "timer":
        import threading

        timer = threading.Timer(count / 1000, _die)
        timer.daemon = True
        timer.start()
        return
    if event == "step":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(lambda optimizer, args, kwargs: _die() if hit() else None)
        return

    import accelerate.checkpointing as acc_ckpt

    from adversarial_midibert import atomic_io, checkpointing

    if event == "save":
        original = acc_ckpt.save

        def torn_save(obj, f, *args, **kwargs):
            original(obj, f, *args, **kwargs)
            if hit():
                path = Path(f)
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                _die()

        acc_ckpt.save = torn_save
    elif event == "state":
        original_state = checkpointing.save_training_state

        def state_then_die(folder, states):
            written = original_state(folder, states)
            if hit():
                _die()
            return written

        checkpointing.save_training_state = state_then_die
    elif event == "seal":
        original_seal = checkpointing.CheckpointManager._seal

        def die_before_seal(self, tmp, name, step):
            if hit():
                _die()
            return original_seal(self, tmp, name, step)

        checkpointing.CheckpointManager._seal = die_before_seal
    elif event == "rename":
        original_replace = checkpointing.replace_folder

        def die_before_rename(source, target):
            if hit():
                _die()
            return original_replace(source, target)

        checkpointing.replace_folder = die_before_rename
    elif event == "rotate":
        import shutil

        original_rmtree = shutil.rmtree

        def half_delete(path, *args, **kwargs):
            files = sorted(p for p in Path(path).rglob("*") if p.is_file())
            if files and Path(path).name.startswith(atomic_io.TRASH_PREFIX) and hit():
                for file in files[: len(files) // 2 + 1]:
                    file.unlink()
                _die()
            return original_rmtree(path, *args, **kwargs)

        shutil.rmtree = half_delete
    elif event == "best":
        original_folder_replace = atomic_io.replace_folder

        def die_before_swap(source, target):
            if Path(target).name == "best_model" and hit():
                _die()
            return original_folder_replace(source, target)

        atomic_io.replace_folder = die_before_swap


def run_script(script: str, args: list[str], kill_at: str | None = None) -> None:
    """Run ``script`` as ``__main__`` with ``args``, killed at ``kill_at`` (``EVENT:N``) if given."""
    if kill_at:
        event, _, count = kill_at.partition(":")
        install(event, int(count))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def serve() -> None:
    """Import the heavy modules once, then run each request in a forked child (about 7 s of imports saved a run).

    Requests are JSON lines on stdin, ``{"script", "args", "kill_at", "log"}``; for each, one JSON line
    ``{"returncode"}`` (negative: killed by that signal) is written to stdout once the child has ended. Nothing
    here computes with torch before forking, so every child starts as a fresh process would.
    """
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import transformers  # noqa: F401

    import adversarial_midibert.data
    import adversarial_midibert.evaluation
    import adversarial_midibert.hub
    import adversarial_midibert.pretraining  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            with open(request["log"], "w") as log:
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
            code = 0
            try:
                run_script(request["script"], request["args"], request.get("kill_at"))
            except SystemExit as error:
                code = error.code if isinstance(error.code, int) else 1
            except BaseException:  # reported through the exit status and the log
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    spec, script, *args = sys.argv[1:]
    run_script(script, args, spec)


if __name__ == "__main__":
    main()
