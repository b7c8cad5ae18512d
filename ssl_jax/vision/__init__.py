"""The image modality: datasets and host crops, augmentations, the kNN monitor, linear probes,
the report's image plots (``vision.task.TASK``)."""
