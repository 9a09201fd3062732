"""MODEL.WEIGHTS may name a pretraining checkpoint: convert it for the config's model, verify it.

The brief's order (pretrain, then ``tools/train_net.py --config voc_R50_C4_moco.yaml MODEL.WEIGHTS
checkpoint.pth.tar``) needs no separate ``tools/convert.py`` step: ``detection.checks.run_checks``
finds a checkpoint in one of the layouts the converter reads (ours, the official MoCo v1/v2
``.pth.tar``, MoCo v3, torchvision), converts it with ``convert.convert_checkpoint`` for the
``--target`` of the config's architecture into ``OUTPUT_DIR/<stem>_<target>.pkl``, and, once the
backbone check has passed, compares the converted model's features with the source ResNet's
(``detection.verify``). A ``.pkl`` that is already converted is used as it is.
"""

import os
from dataclasses import dataclass

from convert import convert_checkpoint
from convert.mapping import MappingError
from convert.writer import sha256_of
from detection.verify import VerifyError, compare_with_source, target_for_config
from pretrain.weights.reader import ConversionError
from pretrain.weights.safe_pickle import safe_pickle_load


def one_line(text):
    """A multi-line message as one line (train_net prints refusals as one ``error:`` line)."""
    return " ".join(str(text).split())


@dataclass
class Conversion:
    weights: str  # MODEL.WEIGHTS as the user gave it
    local_path: str  # the file read (a URL's downloaded copy)
    layout: str  # "MoCo v1/v2", "MoCo v3", "torchvision"
    output_path: str
    target: str
    reused: bool  # converted by an earlier run of the same command: same source sha256
    message: str = ""  # the one line train_net prints, set once verified

    def summary(self, fit, features):
        how = "found already converted" if self.reused else "converted"
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in features.max_rel_diff.items())
        total = len(fit.backbone_names)
        return (
            f"MODEL.WEIGHTS {self.weights} is a {self.layout} pretraining checkpoint: "
            f"{how} for --target {self.target} (this config's model) into {self.output_path}; "
            f"verified: {total - len(fit.missing)}/{total} backbone tensors loaded, features "
            f"equal the source ResNet's (max relative difference {diffs}); training from it."
        )


def converted_path(cfg, weights, target):
    stem = os.path.basename(weights.split("?")[0]).split(".")[0] or "weights"
    return os.path.join(cfg.OUTPUT_DIR, f"{stem}_{target}.pkl")


def convert_for_config(weights, local_path, layout, cfg, error):
    """Convert ``local_path`` (MODEL.WEIGHTS ``weights``) for ``cfg``'s model; a ``Conversion``.

    ``error``: the exception class to raise (``detection.checks.WeightsError``). A file left in
    OUTPUT_DIR by an earlier run is reused when it was made from the same bytes, else refused.
    """
    target = target_for_config(cfg)
    out = converted_path(cfg, weights, target)
    digest = sha256_of(local_path)
    if os.path.exists(out):
        made_from = _source_of(out)
        if made_from.get("sha256") == digest:
            return Conversion(weights, local_path, layout, out, target, reused=True)
        raise error(
            f"{out} exists but was converted from another file ({made_from.get('file')}, sha256 "
            f"{str(made_from.get('sha256'))[:12]}), not from MODEL.WEIGHTS {weights} (sha256 "
            f"{digest[:12]}). Fix: give another OUTPUT_DIR, or delete {out}."
        )
    try:
        convert_checkpoint(local_path, out, target=target)
    except (ConversionError, MappingError, ValueError) as e:
        raise error(
            f"MODEL.WEIGHTS {weights} is a {layout} checkpoint that cannot be converted "
            f"for this config's model (--target {target}): {one_line(e)}"
        ) from e
    return Conversion(weights, local_path, layout, out, target, reused=False)


def _source_of(path):
    try:
        data = safe_pickle_load(path)
    except Exception:  # noqa: BLE001 - unreadable: treated as made from something else
        return {}
    source = data.get("source") if isinstance(data, dict) else None
    return source if isinstance(source, dict) else {}


def verify_features(conversion, cfg, error):
    """Converted res4/res5 against the source ResNet's layer3/layer4: a FeatureReport."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    try:
        return compare_with_source(conversion.local_path, conversion.output_path, cfg)
    except VerifyError as e:
        raise error(
            f"MODEL.WEIGHTS {conversion.weights} was converted into "
            f"{conversion.output_path} but verification failed: {one_line(e)}"
        ) from e
