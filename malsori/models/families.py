"""The catalogue: imports every model family module so its registration runs (`malsori.models` imports this, so any
import of the package's modules sees every family). A new family module adds one line here, or registers from
anywhere before `build_model` / `build_lm` is called (a plug-in, a test)."""

from malsori.models import aed, ctc, encoders, lms, transducer

__all__ = ["aed", "ctc", "encoders", "lms", "transducer"]
