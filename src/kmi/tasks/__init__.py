"""The doit glue, one module per phase: targets (discover to test), images (manifest, bake,
publish, docs), status and ci (the default task and ci-matrix), config (DOIT_CONFIG and the
reporter), common (the run's context, the shape of a task). dodo.py imports the task_*
generators from these modules."""
