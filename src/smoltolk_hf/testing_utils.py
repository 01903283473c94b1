"""Helpers for tests, benchmarks and examples that must run offline and fast (in the spirit of
`transformers.testing_utils`).

Nothing here is needed to use SmolTolk; it only builds small stand-ins for assets that would otherwise be
downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


def byte_level_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 300,
    eos_token: str = "<|endoftext|>",
    bos_token: str | None = None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory on `corpus` (no download, a few milliseconds for a few
    sentences).

    Like SmolLM2's tokenizer it has an EOS token and, unless `bos_token` is given, no BOS token; the special tokens
    take the first ids (EOS, then BOS). Every byte is in the vocabulary, so any text encodes, and decoding inverts
    encoding. The vocabulary holds at most `vocab_size` ids (fewer when the corpus has too few merges).

    Args:
        corpus: the training text, one string per item (sentences, documents or lines of a file).
        vocab_size: the largest vocabulary, special tokens and the 256 byte symbols included.
        eos_token: the end-of-sequence token.
        bos_token: a beginning-of-sequence token (the tokenizer does not add it itself; `SmolTolkProcessor`
            starts every sequence with it); none by default.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eos_token] + ([bos_token] if bos_token else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos_token, bos_token=bos_token)
