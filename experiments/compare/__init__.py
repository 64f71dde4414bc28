"""The model-family comparison: train every family on one corpus with the same budget, then measure and report them
side by side (an experiment built on malsori, not part of the library).

    python -m experiments.compare --corpus corpus/compare --out exp/compare --minutes 20

Modules: `config` (what a run is, the family recipes in recipes/compare/), `sets` (corpus, long-utterance set,
duration buckets), `runs` (train and measure one family), `report` (tables and plain-language findings), `plots`,
`run` (the whole run and its command line).
"""
