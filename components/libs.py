"""Heavy libraries imported on first use, with their import-time chatter kept off the terminal."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys


def load_tfdv():
    """Imports tensorflow_data_validation, which writes an IPython notice to stderr on import."""
    chatter = io.StringIO()
    with contextlib.redirect_stderr(chatter):
        import tensorflow_data_validation as module
    if chatter.getvalue():
        logging.getLogger("pipeline").debug(chatter.getvalue().strip())
    return module


@contextlib.contextmanager
def children_quiet(when: bool = True):
    """Within the block, stderr (file descriptor 2) goes nowhere unless `-v` (the pipeline's log at debug): the
    processes started meanwhile inherit it. Beam's multi-processing workers import TensorFlow, TFDV and Google's
    libraries afresh, and their warnings and notices go straight to the terminal: the parent's quieting
    (`warnings`, log levels) does not reach another process, and TFDV's notice is a plain write to stderr. A
    failure still reaches the parent as an exception; `-v` shows the workers' own words."""
    if not when or logging.getLogger("pipeline").isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
