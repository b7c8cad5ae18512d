"""The text modality: corpora and their tfds builders, WordPiece, packing, the held-out MLM monitor,
the BBC News probe, the report's text plots (``text.task.TASK``)."""
