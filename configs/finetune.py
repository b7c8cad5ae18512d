"""python -m ssl_jax.finetune --config=configs/finetune.py --config.encoder=EXPORT_DIR_OR_WORKDIR --config.dataset=NAME_OR_folder:PATH --config.label_fraction=0.01 --config.mode=frozen

Transfer of a pretrained encoder: a linear softmax head on another labelled dataset, trained on a
seeded class-balanced ``label_fraction`` of its train split (the SimCLR paper's 1% / 10%
protocol; 1.0: every label), with the encoder ``frozen`` (features computed once, BN statistics
kept) or fine-tuned ``end_to_end``. Beside it, the same architecture trained from scratch end to
end on the same labels for the same steps (``compare_scratch``). Nesterov SGD with a cosine
schedule, no augmentation; top-1 on the test split. ``:runlocal`` shrinks it to a smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = ml_collections.ConfigDict()
    config.encoder = ml_collections.FieldReference(None, field_type=str)  # export dir or workdir
    config.step = ml_collections.FieldReference(None, field_type=int)  # a workdir's checkpoint
    config.dataset = ml_collections.FieldReference(None, field_type=str)  # tfds name, folder:PATH
    config.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.label_fraction = 0.1  # of the train split, class-balanced; 1.0: all of it
    config.mode = "frozen"  # or "end_to_end"
    config.steps = 500
    config.batch_size = 256  # global; rounded to the labelled count when that is smaller
    config.learning_rate = 0.1  # linear head and (end_to_end) encoder, per 256 examples
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.seed = 0  # labelled subset, head init, example order; scratch encoder init
    config.compare_scratch = True
    config.eval_batch_size = 1000
    config.max_test_examples = ml_collections.FieldReference(None, field_type=int)
    config.output = ml_collections.FieldReference(None, field_type=str)  # results JSON path
    if args.runlocal:
        config.steps = 20
        config.batch_size = 64
        config.max_test_examples = 500
    return config
