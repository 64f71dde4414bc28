"""Language models: word n-gram LMs (interpolated modified Kneser–Ney, ARPA in and out, pruning) and a GPT (gpt.py)."""

from malsori.lm.ngram import NgramLM, Perplexity
from malsori.lm.text_files import TextReadStats, iter_text_lines

__all__ = ["NgramLM", "Perplexity", "TextReadStats", "iter_text_lines"]
