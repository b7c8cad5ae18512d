"""The trainer and what it stands on: step, loop, state, checkpoints, optimiser, devices, storage.

Nothing here imports an image or text module (``tests/test_layout.py`` holds that): a method
(``core.method.Method``) and a modality (``core.task.Task``) come in as arguments.
"""
