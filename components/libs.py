"""Heavy libraries imported on first use, with their import-time chatter kept off the terminal."""
from __future__ import annotations

import contextlib
import io
import logging


def load_tfdv():
    """Imports tensorflow_data_validation, which writes an IPython notice to stderr on import."""
    chatter = io.StringIO()
    with contextlib.redirect_stderr(chatter):
        import tensorflow_data_validation as module
    if chatter.getvalue():
        logging.getLogger("pipeline").debug(chatter.getvalue().strip())
    return module
