"""Reading pretraining checkpoints: safe loading, layout detection, the ResNet backbone inside.

The one reader shared by the evaluations (``tools/lincls.py``, ``tools/knn.py``) and the converter.
"""
