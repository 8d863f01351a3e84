"""dsbs-jax: Distilling step-by-step with JAX/Flax, T5X-layout T5 models and SeqIO tasks.

Sub-packages follow the pipeline:
  data/        canonical records, dataset adapters, teacher-output parsers, TFRecords
  rationales/  the rationale-generation job (teacher backends, prompts, resumable output)
  models/      Flax T5 v1.1 (T5X parameter layout), decoding, partitioning, loaders
  train/       the embedded trainer, evaluation and prediction
  experiments/ `dsbs demo` and `dsbs sweep`
The SeqIO tasks live in the top-level `tasks` package so that T5X's
`--gin.MIXTURE_OR_TASK_MODULE="tasks"` works.
"""

__version__ = "0.1.0"
