"""malsori (말소리, "speech sounds"): an offline-first, from-scratch sequence-to-sequence toolkit."""

__version__ = "0.1.0"


def load(path, device: str = "auto"):
    """Load a trained model folder, or a released model by name: a speech model as a Recognizer
    (`malsori.load("en-small").transcribe("file.wav")`), a translation model as a TextTranslator
    (`malsori.load("exp/mt/model").translate(["Hello."])`)."""
    from malsori.pretrained import Recognizer, model_task

    if model_task(path) == "mt":
        from malsori.mt.translate import TextTranslator

        return TextTranslator.load(path, device)
    return Recognizer.load(path, device)
