#!/usr/bin/env python3
"""Copy a GGUF whose SentencePiece scores are all equal (TinyStories-656K-Q8_0.gguf ships -1000
everywhere) with scores -id, the ranking kvq infers for such a vocabulary, so that llama.cpp
tokenizes it as kvq does. Needs llama.cpp's gguf-py and Debian's python3-numpy/-tqdm:
    PYTHONPATH=LLAMA_CPP_DIR/gguf-py /usr/bin/python3 bench/gguf_repair_scores.py IN.gguf OUT.gguf
Used by bench/weight-types-real.sh; never by CI."""
import sys
import types

# gguf-py imports sentencepiece for converters this script does not use
sys.modules.setdefault("sentencepiece", types.SimpleNamespace(SentencePieceProcessor=None))

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

src, dst = sys.argv[1], sys.argv[2]
reader = gguf.GGUFReader(src, "r")
n = len(reader.fields["tokenizer.ggml.tokens"].data)
arch = str(bytes(reader.fields["general.architecture"].parts[-1]), encoding="utf-8")
writer = gguf.GGUFWriter(dst, arch=arch)
scores = MetadataDetails(gguf.GGUFValueType.ARRAY, [float(-i) for i in range(n)])
copy_with_new_metadata(reader, writer, {"tokenizer.ggml.scores": scores}, [])
