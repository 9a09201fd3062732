"""Dataset registration beyond Detectron2's builtins, and the train loaders our tasks need."""
