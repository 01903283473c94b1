#!/usr/bin/env python
"""
Convert a SmolTolk checkpoint released by the paper's authors (`.pt` from their trainer) into a Hugging Face folder.

Same as `smoltolk convert-authors`; the implementation is `smoltolk_hf.conversion.convert_authors_checkpoint`.

    python modeling/convert_authors_checkpoint.py model_ckpt.pt smoltolk-2b-hf --tokenizer path/to/SmolLM-1.7B
"""

import sys

from smoltolk_hf.conversion import cli_convert_authors

if __name__ == "__main__":
    sys.exit(cli_convert_authors())
