"""The shipped demo proxy: small, loads strictly into its architecture, and keeps every token row
the demo corpus can use (the rows it drops are zero)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.demo.proxy import PACKED, PROXY_MODEL, corpus_token_ids, expand_checkpoint, proxy_templates


def test_packed_proxy_is_small_and_loads(tmp_path):
    import open_clip
    import torch

    from clipcov_cli.models import register_model_config

    assert PACKED.stat().st_size < 3_000_000
    ckpt = expand_checkpoint(tmp_path / "proxy.pt")
    register_model_config()
    model = open_clip.create_model(PROXY_MODEL)
    open_clip.load_checkpoint(model, str(ckpt), strict=True, weights_only=True)
    table = model.token_embedding.weight.detach()
    kept = torch.tensor(corpus_token_ids())
    assert torch.count_nonzero(table[kept].abs().sum(1)) == len(kept)
    assert int(torch.count_nonzero(table.abs().sum(1))) == len(kept)


def test_every_corpus_caption_uses_kept_tokens_only(tmp_path):
    import open_clip

    from clipcov_cli.corpus import CorpusConfig, generate_corpus

    layout = generate_corpus(tmp_path / "c", CorpusConfig(n_web=300, n_proxy_per_class=1, n_test_per_class=1))
    captions = pq.read_table(layout.samples_path, columns=["caption"]).column("caption").to_pylist()
    prompts = [t.format(c=c) for t in proxy_templates() for c in layout.class_names]
    tokens = open_clip.get_tokenizer(PROXY_MODEL)(captions + prompts).numpy()
    assert set(np.unique(tokens)) <= set(corpus_token_ids())
