"""bon's files: input records (JSONL, Parquet, datasets), the typed reader and the writer of
bon's output, run statistics, and the prompt templates.

May import only config, errors and the standard library (plus the optional readers of
input formats): every other package builds on it.
"""
