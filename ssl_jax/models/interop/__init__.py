"""Encoder weights in and out of other files: ssl_jax's own export and BERT checkpoints.

``exported`` reads and writes ``python -m ssl_jax.export`` folders; ``bert_checkpoints`` maps
Hugging Face and Google TF BERT checkpoints onto ``ssl_jax.models.Bert``.
"""
