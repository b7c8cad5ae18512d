"""Builds tfds datasets offline from local copies of their source files.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``; text corpora from our builders
(``ssl_jax.text.builders``) plus a WordPiece vocab; everything else uses tfds's download.
Run as ``python -m ssl_jax.data.prepare fashion_mnist``; safe to run again (it does nothing then).
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys

from ssl_jax.core import storage

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_INSTALL_HINT = "sudo apt-get install -y dataset-fashion-mnist"

# Debian re-gzipped the upstream files without the stored name; the deflate streams are intact.
# Upstream headers carry FNAME and these modification times (values from the upstream archives).
_UPSTREAM_MTIME = {"train": 1504176606, "t10k": 1504176627}
_GZIP_FLAG_FNAME = 0x08


def restore_upstream_gzip(src: str, dst: str) -> None:
    """Rewrites ``src``'s 10-byte gzip header into the upstream one, writing ``dst`` atomically."""
    with open(src, "rb") as f:
        data = f.read()
    magic, method, flags = data[:2], data[2], data[3]
    if magic != b"\x1f\x8b" or method != 8 or flags != 0:
        raise ValueError(f"{src}: not a plain deflate gzip file without optional header fields.")
    name = os.path.basename(src)[: -len(".gz")]
    mtime = _UPSTREAM_MTIME[name.split("-")[0]]
    header = b"\x1f\x8b" + bytes([8, _GZIP_FLAG_FNAME]) + struct.pack("<I", mtime) + data[8:10]
    storage.write_atomically(dst, header + name.encode("latin-1") + b"\0" + data[10:])
    with gzip.open(dst) as f:  # fails loudly unless the header is well formed
        f.read(16)


def prepare(name: str, data_dir: str | None = None, *, lower_case: bool = True) -> None:
    """Makes ``tfds.load(name, data_dir=data_dir)`` work; a no-op when it already does.

    Text corpora (``ssl_jax.text.data.DATASETS``; ``NAME:VOCAB_SIZE`` picks the vocab size) are
    built with their WordPiece vocab, lower-cased unless ``lower_case`` is False.
    """
    import tensorflow_datasets as tfds

    from ssl_jax.text import data as text

    text_name, _, vocab_size = name.partition(":")
    if text_name in text.DATASETS:
        dataset = text.prepare(
            text_name, data_dir, vocab_size=int(vocab_size or 0) or None, lower_case=lower_case
        )
        print(f"prepared {text_name} ({dataset.tfds_name}) with vocab {dataset.vocab_path}")
        return

    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        print(f"{name} is already prepared in {builder.data_dir}")
        return
    if name == "fashion_mnist" and os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
        manual_dir = os.path.join(os.path.dirname(builder.data_dir), "manual")
        os.makedirs(manual_dir, exist_ok=True)
        for file_name in sorted(os.listdir(DEBIAN_FASHION_MNIST_DIR)):
            if file_name.endswith(".gz"):
                restore_upstream_gzip(
                    os.path.join(DEBIAN_FASHION_MNIST_DIR, file_name),
                    os.path.join(manual_dir, file_name),
                )
        config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
        # tfds takes a URL's file from manual_dir when one of that name is there.
        builder.download_and_prepare(download_config=config)
    else:
        builder.download_and_prepare()
    print(f"prepared {name} in {builder.data_dir}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.data.prepare",
        description="Builds tfds datasets offline, into $TFDS_DATA_DIR (default "
        "~/tensorflow_datasets); does nothing for one already built.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        default=["fashion_mnist"],
        metavar="NAME",
        help="a tfds image dataset (default fashion_mnist), or a text corpus as NAME or "
        "NAME:VOCAB_SIZE (ptb, ptb:8192, ...), built with its WordPiece vocab",
    )
    parser.add_argument(
        "--cased", action="store_true", help="text corpora: a cased vocab (text.lower_case=False)"
    )
    return parser.parse_args(argv[1:])


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    for name in args.names:
        prepare(name, data_dir, lower_case=not args.cased)


if __name__ == "__main__":
    main(sys.argv)
