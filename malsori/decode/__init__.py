"""Search: turn model outputs into hypotheses (greedy, beam search), steered by `DecodeOptions` and scorers."""

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from malsori.decode.options import DecodeOptions
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import PartialScorer, Scorer, WeightedScorer

__all__ = ["DecodeOptions", "Hypothesis", "PartialScorer", "Scorer", "WeightedScorer", "ctc_greedy",
           "ctc_prefix_beam_search"]
