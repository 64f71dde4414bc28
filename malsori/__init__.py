"""malsori (말소리, "speech sounds"): an offline-first, from-scratch sequence-to-sequence toolkit."""

__version__ = "0.1.0"


def load(path, device: str = "auto"):
    """Load a trained model folder, or a released model by name, as a Recognizer:
    `malsori.load("en-small").transcribe("file.wav")`."""
    from malsori.pretrained import Recognizer

    return Recognizer.load(path, device)
