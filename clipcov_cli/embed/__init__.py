"""``clipcov embed``: proxy CLIP embeddings and zero-shot pseudo-labels, in clip-retrieval's layout.

The split follows clip-retrieval's inference (reader -> mapper -> writer, driven by a runner):

- ``config.py``   the frozen :class:`EmbedConfig` built by the command
- ``model.py``    :func:`load_model`: open_clip architecture + tag or local checkpoint (weights_only)
- ``vocab.py``    :func:`load_vocabulary`, :func:`class_text_embeddings` (zero-shot class text) and
                  :func:`label_class_embeddings` (the same at float16 precision, as ``labels/`` stores them)
- ``labels.py``   the label formulas (pseudo-label, label agreement) as pure array functions
- ``reader.py``   stream tar shards with webdataset, decode in DataLoader workers, batch per shard
- ``mapper.py``   the core: batches + model -> float16 unit embeddings (also run by cluster engines)
- ``writer.py``   one part per shard, every file atomic (npy, parquet, skip report)
- ``manifest.py`` ``clipcov.json``: model, weights fingerprint, vocabulary, parts done
- ``runner.py``   orchestration: validate, resume at the first unfinished part, progress, summary
- ``relabel.py``  ``--relabel``: new ``labels/`` from the stored embeddings
- ``progress.py`` the rich progress bar (samples/s, ETA) on stderr
"""

from clipcov_cli.embed.config import EmbedConfig
from clipcov_cli.embed.model import LoadedModel, ModelSpec, load_model
from clipcov_cli.embed.runner import EmbedSummary, run_embed
from clipcov_cli.embed.vocab import Vocabulary, class_text_embeddings, label_class_embeddings, load_vocabulary

__all__ = [
    "EmbedConfig", "EmbedSummary", "LoadedModel", "ModelSpec", "Vocabulary",
    "class_text_embeddings", "label_class_embeddings", "load_model", "load_vocabulary", "run_embed",
]
