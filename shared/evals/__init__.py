"""Evaluation suites (issue 14): the suite format, the assertions, the metrics, grading agreement and
regressions. Pure functions over results: no store, no engine, no I/O (docs/architecture.md,
"Evaluation"). The `evals` extra brings what they use (PyYAML, rouge-score, sacrebleu, rapidfuzz,
python-jsonpath, regex).
"""
