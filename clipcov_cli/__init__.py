"""clipcov: curate image-caption corpora for CLIP pretraining."""

__version__ = "0.1.0"
