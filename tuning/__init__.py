"""KerasTuner search over the experiment config: `python -m tuning.search` (see tuning/search.py)."""
