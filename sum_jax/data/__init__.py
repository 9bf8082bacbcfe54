"""Data for SUM: dataset preparation (`builder`, `formats`, `registry`), the Grain training
pipeline (`pipeline`), the evaluation-set reader (`eval_sets`) and the pseudo-label file format
(`pseudo_label_format`). See docs/data.md."""
