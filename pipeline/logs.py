"""What a command or an API call prints on stderr: the pipeline's own lines (components, epochs, trials), and
TensorFlow's, Beam's and the libraries' only when asked (`-v`, `verbose=True`)."""
from __future__ import annotations

import logging
import os
import sys
import warnings

log = logging.getLogger("pipeline")


def quiet(verbose: bool = False) -> None:
    """Keeps stderr to the pipeline's own lines unless `verbose`; takes effect on TensorFlow's C++ logs only
    when called before TensorFlow is imported (the commands and the API's functions call it first).

    Example:
        >>> quiet()
        >>> log.getEffectiveLevel() == logging.INFO
        True
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, stream=sys.stderr, format="%(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        warnings.filterwarnings("ignore")
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        for name in ("tensorflow", "apache_beam", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)
