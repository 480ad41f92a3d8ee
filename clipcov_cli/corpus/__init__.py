"""The web-like synthetic demo corpus (generator) and a local HTTP server to download it from.

Roles: ``config.py`` (knobs), ``concepts.py`` (procedural drawing), ``captions.py`` (templates,
synonyms, boilerplate), ``noise.py`` (class frequencies, noise kinds), ``generator.py`` (writes the
splits), ``server.py`` (127.0.0.1 HTTP server).
"""

from clipcov_cli.corpus.config import CorpusConfig
from clipcov_cli.corpus.generator import CorpusLayout, generate_corpus, load_layout, write_url_list
from clipcov_cli.corpus.server import CorpusServer

__all__ = ["CorpusConfig", "CorpusLayout", "CorpusServer", "generate_corpus", "load_layout", "write_url_list"]
