"""python -m ssl_jax.linear_eval --config=configs/linear_eval.py --workdir=PRETRAIN_DIR

Linear evaluation of a pretraining run's frozen encoder: features of the labelled train and test
splits extracted once and cached in PRETRAIN_DIR/linear_eval, standardised with the train
statistics, then a softmax classifier trained with Nesterov SGD and a cosine schedule, no
augmentation. The same recipe is applied to the encoder at random init and to raw pixels, as
references. A text (MLM) run gets the BBC News probe instead: logistic regression on mean-pooled
features of the run's ``mlm.probe_max_seq_len`` first pieces of each article, every 5th article
held out, for the encoder and at random init (``compare_random_init``; the classifier fields and
``compare_pixels`` are for image runs). ``:runlocal`` shrinks it to a seconds-long smoke run on a
sliver of the data.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, runlocal=False)
    config = ml_collections.ConfigDict()
    config.step = ml_collections.FieldReference(None, field_type=int)  # None: newest checkpoint
    config.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: the run's
    config.epochs = 100
    config.batch_size = 1024
    config.learning_rate = 0.1  # per 256 examples, scaled linearly to batch_size
    config.optimizer = "sgd"  # Nesterov momentum; or "lars", "adamw"
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.seed = 0  # order of the classifier's training examples
    config.feature_batch_size = 1024  # images or articles per pass, rounded up to the device count
    config.max_train_examples = ml_collections.FieldReference(None, field_type=int)
    config.max_test_examples = ml_collections.FieldReference(None, field_type=int)
    config.compare_random_init = True
    config.compare_pixels = True
    config.bbc_max_articles = ml_collections.FieldReference(None, field_type=int)  # None: 2,225
    if args.runlocal:
        config.epochs = 5
        config.batch_size = 64
        config.feature_batch_size = 128
        config.max_train_examples = 256
        config.max_test_examples = 128
        config.bbc_max_articles = 250
    return config
