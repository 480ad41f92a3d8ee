"""The ClipCov method: formula terms (``terms.py``) and the exact greedy (``greedy.py``)."""
