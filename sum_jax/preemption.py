"""Stopping cleanly before the machine is taken away: SIGTERM, a save, a resumable exit.

TPU VMs, spot and preemptible VMs, SLURM (`scancel`, or a time limit with `--signal`) and
Kubernetes send SIGTERM some seconds before they stop a process (GCE gives spot VMs 30 s).
The long-running commands watch for it and stop at their next safe point:

    with preemption.watch() as stop:
        for step in ...:
            ...
            if stop.reached(step):
                save(step)
                raise preemption.Preempted(f"saved checkpoint {step} in ...")

- `train`: after the current step, a checkpoint of that step (state and data iterators),
  then the stop. In a multi-process run (`jax.distributed.initialize()`), JAX's preemption
  service already catches SIGTERM on every host (it installs its own handler), and
  `reached(step)` asks it (`multihost_utils.reached_preemption_sync_point`, what Orbax's
  `CheckpointManager.reached_preemption` calls): it turns true on every process at the same
  step, however many hosts got the signal, so every process saves the same step.
- `pseudo_labels`, `evaluate`: the current image's file or record is finished, then the stop.

`Preempted` carries what was saved; `sum_jax.cli.run` prints it with the command to run
again and exits with `EXIT_PREEMPTED`, 75 (`EX_TEMPFAIL` of sysexits.h: "temporary failure,
try again"), which a job script can tell apart from 0 (done), 1 (a bug), 2 (bad input) and
143 (killed by SIGTERM without saving: a run outside any `watch` block). A second SIGTERM
while the first is being handled ends the process at once, as the default action would.

`watch` installs its handler for the block only and puts back the one before it (so a
nested `watch`, the evaluation the trainer runs after training, works); outside the main
thread, or in a multi-process JAX run (where SIGTERM is JAX's, above), it installs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

EXIT_PREEMPTED = 75

log = logging.getLogger(__name__)


class Preempted(BaseException):
    """Raised at a safe point after SIGTERM, once the state is saved: its message says
    what was saved (the command-line wrapper adds how to resume). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


class Watch:
    """The SIGTERM seen in a `watch` block (see the module docstring)."""

    def __init__(self, synced: bool):
        self.received: int | None = None  # the signal number, once one arrived
        self.synced = synced  # the processes stop together through JAX's service
        self._warned = False

    @property
    def requested(self) -> bool:
        """Whether this process received SIGTERM in the block."""
        return self.received is not None

    def reached(self, step: int) -> bool:
        """Whether to stop after `step`. Single process: SIGTERM arrived. Several
        processes stepping together (`watch(synced=True)`): JAX's preemption sync point
        is `step` on every process; call it at every step on every process."""
        if not self.synced:
            return self.requested
        from jax.experimental import multihost_utils

        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # jax_enable_preemption_service is off
            if not self._warned:
                self._warned = True
                log.warning(
                    "JAX's preemption service is off (jax_enable_preemption_service): "
                    "SIGTERM will not save a checkpoint before the processes stop"
                )
            return False

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self.received is not None:  # a second signal: stop now, as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum


@contextlib.contextmanager
def watch(*, synced: bool = False) -> Iterator[Watch]:
    """Catches SIGTERM for the block, yielding a `Watch` to poll at each safe point.

    `synced`: the caller's processes run the same steps in lockstep (the trainer); with
    more than one JAX process, JAX's preemption service decides when to stop (see the
    module docstring) and no handler is installed here."""
    import jax

    # Several processes: `jax.distributed.initialize()` gave SIGTERM to JAX's own handler,
    # which Python's `signal.getsignal` does not see (it still says SIG_DFL); replacing it
    # would leave the other processes waiting for this one.
    several = jax.process_count() > 1
    stop = Watch(synced=synced and several)
    previous = signal.getsignal(signal.SIGTERM)
    install = (
        not several
        and previous is not None  # None: a handler from outside Python, left in place
        and threading.current_thread() is threading.main_thread()
    )
    if install:
        signal.signal(signal.SIGTERM, stop._handle)
    try:
        yield stop
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)
