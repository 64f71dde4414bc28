"""Search: turn model outputs into hypotheses (greedy, beam search)."""

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from malsori.decode.result import Hypothesis

__all__ = ["Hypothesis", "ctc_greedy", "ctc_prefix_beam_search"]
