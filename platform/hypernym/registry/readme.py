"""A model card people can read: README.md rendered from the JSON card, never written by hand.

Logged with every registered version (and its head as the version's description, which MLflow's
UI shows), and written by `hypernym models export --format hf` under Hugging Face front matter.
"""

from __future__ import annotations

from typing import Any

from hypernym.registry.card import ModelCard

__all__ = ["hf_front_matter", "render_readme"]

_PERSON = "n00007846"  # WordNet's person subtree, which the ImageNet people-filtering removed
_SHOWN_CLASSES = 40
_RECIPE_KEYS = ("model.arch", "train.epochs", "train.loss", "train.ema_decay", "optim.opt",
                "optim.lr", "optim.weight_decay", "data.batch_size", "data.img_size",
                "scaling.num_workers", "mode", "registry.select")


def _lemma(wnid: str) -> str:
    try:
        from hypernym.taxonomy import Hierarchy

        hierarchy = Hierarchy.imagenet21k()
        return hierarchy.lemma(wnid) if wnid in hierarchy else ""
    except Exception:  # noqa: BLE001 - a name is a courtesy; the id stands on its own
        return ""


def _is_imagenet(card: ModelCard) -> bool:
    """Trained on ImageNet-like WordNet classes (synset ids), e.g. ImageNet-21K(-P)."""
    ids = [c["id"] for c in card.classes]
    wordnet = bool(ids) and all(len(i) == 9 and i[0] == "n" and i[1:].isdigit() for i in ids)
    name = str(card.dataset.get("name", "")).lower()
    return wordnet or any(k in name for k in ("imagenet", "in21k", "in1k", "winter21"))


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def render_readme(card: ModelCard, *, name: str | None = None,
                  parent: ModelCard | None = None) -> str:
    """Markdown for ``card``; ``parent`` is the backbone's card of a fine-tuned model."""
    title = name or f"{card.arch} ({card.task})"
    _, h, w = card.input_size
    data = card.dataset
    detector = _detector_text(card)
    lines = [f"# {title}", "",
             (detector["intro"] if detector else
              f"A timm `{card.arch}` {'pretrained' if card.task == 'pretrain' else 'fine-tuned'}")
             + f" by hypernym on **{data.get('name', '?')}**: {card.num_classes} classes, "
             f"{h}x{w} RGB input." + _distilled(card), "",
             "## Model", "",
             detector["architecture"] if detector else
             f"- architecture: timm `{card.arch}`, " + (
                 f"multi-label classifier, one sigmoid per class (loss `{card.loss}`); a label "
                 "is predicted from its class's threshold (Classes)"
                 if card.objective == "multilabel" else
                 f"{card.num_classes}-way classifier (loss `{card.loss}`)"),
             f"- weights: the run's {card.weights} weights, "
             + (f"epoch {card.selected.get('epoch')} ({card.selected.get('select', 'last')}"
                + (f" by {card.selected['metric']} = {card.selected['value']:.4f}"
                   if card.selected.get("metric") else "") + ")" if card.selected else
                "as registered"),
             detector["preprocessing"] if detector else
             (f"- preprocessing: resize the whole image to {h}x{w} ({card.interpolation}, "
              f"crop_mode squash)" if card.crop_mode == "squash" else
              f"- preprocessing: resize the shorter side to {round(h / card.crop_pct)} px "
              f"({card.interpolation}, crop_pct {card.crop_pct}), {card.crop_mode} crop "
              f"{h}x{w}") + f", scale to 0-1, mean {card.mean}, std {card.std}",
             f"- files: `model.safetensors` (sha256 `{card.weights_sha256 or 'not recorded'}`),"
             " `card.json`; no pickles", "",
             "## Data", ""]
    images = data.get("images") or {}
    lines += [f"- dataset: {data.get('name', '?')}, fingerprint `{data.get('fingerprint', '?')}`",
              f"- location: `{data.get('uri', '?')}`",
              "- images: " + (", ".join(f"{split} {n:,}" for split, n in images.items())
                              if images else "not recorded"),
              f"- classes: {card.num_classes}; hierarchy: {card.hierarchy.get('kind', 'flat')}"
              + (f", depth up to {max(len(p) for p in card.hierarchy['class_paths'].values())}"
                 if card.hierarchy.get("class_paths") else "")]
    excluded = data.get("excluded_subtrees") or []
    lines.append("- excluded subtrees: " + (", ".join(
        f"`{s}` ({_lemma(s) or 'unknown synset'})" for s in excluded) if excluded else "none"))
    dropped = {k: v for k, v in (data.get("dropped") or {}).items() if v}
    if dropped:
        lines.append("- dropped in preparation: " + ", ".join(f"{k} {v:,}"
                                                            for k, v in dropped.items()))
    prep = data.get("recipe") or {}
    if prep:
        keep = {k: prep[k] for k in ("source_format", "min_per_class", "val_per_class",
                                     "image_size", "resize", "dedupe") if k in prep}
        lines.append(f"- prepare recipe: {keep}")
    lines += ["", "## Training recipe", ""]
    recipe = {k: v for k in _RECIPE_KEYS if (v := _get(card.recipe, k)) is not None}
    lines += [f"- {k}: `{v}`" for k, v in recipe.items()] or ["- not recorded"]
    lines += ["", "## Metrics", ""]
    if card.metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(card.metrics.items())]
    else:
        lines.append("none recorded")
    lines += ["", "## Lineage", "",
              f"- training run: MLflow run `{card.run_id or '?'}`",
              f"- dataset fingerprint: `{data.get('fingerprint', '?')}`"]
    if card.parent:
        lines.append(f"- started from the registered backbone `{card.parent}`"
                     + (f" (trained on {parent.dataset.get('name', '?')}, fingerprint "
                        f"`{str(parent.dataset.get('fingerprint', '?'))[:16]}`)" if parent else ""))
    lines += _teacher_lines(card.lineage)
    lines.append("- full chain: `hypernym models lineage " + (name or "NAME") + "/VERSION`")
    lines += ["", "## Intended use", "",
              f"{'Object detection of' if detector else 'Image classification into'} the "
              f"{card.num_classes} classes below, on images like "
              "the training data"
              + (", and as a backbone to fine-tune on other image data (`hypernym.load_backbone"
                 "(REF, num_classes=N)`)" if card.task == "pretrain" else "")
              + ". Not for decisions about people, and not as evidence on its own.", ""]
    lines += _limitations(card, parent)
    lines += ["", "## Use", "", "```python", *(detector["use"] if detector else [
              "import timm  # after `hypernym models pull REF --out DIR`",
              'model = timm.create_model("local-dir:DIR", pretrained=True)']), "```", "",
              "Serving: `mlflow models serve -m models:/NAME@ALIAS` or `hypernym serve "
              "NAME@ALIAS`; POST `{\"dataframe_split\": {\"columns\": [\"image\"], \"data\": "
              "[[\"<base64 JPEG>\"]]}}` to `/invocations` (MLflow) or `/` (Ray Serve).", "",
              "## Classes", ""]
    if card.thresholds:  # a multi-label model: each class's threshold
        lines += ["| index | id | name | threshold |", "| --- | --- | --- | --- |"]
        lines += [f"| {i} | {c['id']} | {c.get('name', '')} | {t:.4f} |"
                  for i, (c, t) in enumerate(zip(card.classes[:_SHOWN_CLASSES],
                                                 card.thresholds, strict=False))]
    else:
        lines += ["| index | id | name |", "| --- | --- | --- |"]
        lines += [f"| {i} | {c['id']} | {c.get('name', '')} |"
                  for i, c in enumerate(card.classes[:_SHOWN_CLASSES])]
    if len(card.classes) > _SHOWN_CLASSES:
        lines.append(f"\n... and {len(card.classes) - _SHOWN_CLASSES} more (card.json has all).")
    return "\n".join(lines) + "\n"


def _detector_text(card: ModelCard) -> dict[str, Any] | None:
    """The lines that differ for a detector (None for a classifier)."""
    spec = card.detection
    if not spec:
        return None
    return {
        "intro": f"A torchvision `{spec['detector']}` detector on timm `{card.arch}` features, "
                 "fine-tuned",
        "architecture": f"- architecture: torchvision `{spec['detector']}` on timm "
                        f"`{card.arch}` (features_only, the last stages through an FPN of "
                        f"{spec['fpn_channels']} channels); labels are class index + 1 (0 is "
                        "the background)",
        "preprocessing": f"- preprocessing (inside the detector): resize to fit "
                         f"{spec['img_size']}x{spec['img_size']}, normalise 0-1 pixels with "
                         f"mean {spec['mean']}, std {spec['std']}; boxes come back in the "
                         "input's pixels; served detections scoring under "
                         f"{spec['score_threshold']} are left out",
        "use": ["import sys, torchvision  # after `hypernym models pull REF --out DIR`",
                'sys.path.insert(0, "DIR")  # detector_model.py: torch, torchvision, timm only',
                "from detector_model import load_detector",
                'model = load_detector("DIR")',
                'print(model([torchvision.io.decode_image("image.jpg") / 255])[0])'],
    }


def _distilled(card: ModelCard) -> str:
    """The intro's word on a distilled model: from which teacher, online or from a store."""
    teacher = card.lineage.get("teacher")
    if not teacher:
        return ""
    how = "an offline teacher store" if card.lineage.get("distill_store") else "the teacher online"
    return (f" Distilled from the registered teacher `{teacher}` (timm "
            f"`{card.lineage.get('teacher_arch', '?')}`), with {how}.")


def _teacher_lines(lineage: dict[str, str]) -> list[str]:
    if not lineage.get("teacher"):
        return []
    lines = [f"- distilled from the registered teacher `{lineage['teacher']}` (timm "
             f"`{lineage.get('teacher_arch', '?')}`, weights sha256 "
             f"`{lineage.get('teacher_sha256', '?')}`): loss `{lineage.get('distill_loss')}`, "
             f"alpha {lineage.get('distill_alpha')}, temperature "
             f"{lineage.get('distill_temperature')}"]
    if lineage.get("distill_store"):
        lines.append(f"- soft labels from the teacher store `{lineage['distill_store']}` "
                     f"(fingerprint `{lineage.get('distill_store_fingerprint', '?')}`)")
    return lines


def _limitations(card: ModelCard, parent: ModelCard | None) -> list[str]:
    answers = ("- It finds only its own classes, and may find them in images of anything else; "
               "its scores are not calibrated confidence." if card.detection else
               "- It answers with every class whose probability reaches that class's "
               "threshold (tuned for F1 on the validation split), so an image of nothing it "
               "knows may still get labels; the probabilities are sigmoids, not calibrated "
               "confidence." if card.objective == "multilabel" else
               "- It answers with one of its classes for any input, including images of "
               "nothing it knows; the probabilities are a softmax, not calibrated confidence.")
    lines = ["## Known limitations", "", answers,
             f"- Measured only on the validation split of {card.dataset.get('name', '?')}; "
             "accuracy on other cameras, sites or populations is unknown."]
    if card.loss == "semantic":
        lines.append("- Trained with the semantic softmax (one softmax per hierarchy level): "
                     "the served probabilities are one softmax over all classes, so an "
                     "ancestor and its descendant can both rank high.")
    for source, label in ((card, "this model"), (parent, "its backbone")):
        if source is None or not _is_imagenet(source):
            continue
        excluded = source.dataset.get("excluded_subtrees") or []
        people = (f"the person subtree (`{_PERSON}`) was excluded from {label}'s data"
                  if _PERSON in excluded else
                  f"the person subtree (`{_PERSON}`) was NOT excluded from {label}'s data")
        lines.append(
            f"- {label[0].upper() + label[1:]} learned from ImageNet-style WordNet data, "
            "which carries ImageNet's documented biases: offensive and non-visual categories "
            "for people and a skewed demographic make-up in the person subtree (Yang et al., "
            "2020, \"Towards Fairer Datasets\", which filtered it), a strong geographic skew "
            "towards North American and Western European images (Shankar et al., 2017), and "
            f"images collected from the web without their subjects' consent; {people}.")
    return lines


def hf_front_matter(card: ModelCard) -> str:
    """The YAML header the Hugging Face Hub reads (timm's `push_to_hf_hub` writes the same
    keys); no license is claimed: that is the publisher's call."""
    dataset = str(card.dataset.get("name", "")).lower()
    return ("---\ntags:\n- image-classification\n- timm\n- hypernym\n"
            "pipeline_tag: image-classification\nlibrary_name: timm\n"
            + (f"datasets:\n- {dataset}\n" if dataset else "") + "---\n")
