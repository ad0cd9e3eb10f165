"""The terminal view of a lineage chain: a rich tree, oldest (the dataset) at the root."""

from __future__ import annotations

from typing import Any

from rich.tree import Tree

__all__ = ["tree"]


def _label(node: dict[str, Any]) -> str:
    kind = node["kind"]
    if kind == "dataset":
        images = ", ".join(f"{k} {v:,}" for k, v in (node.get("images") or {}).items())
        excluded = ", ".join(node.get("excluded_subtrees") or []) or "none"
        prep = node.get("recipe") or {}
        recipe = ", ".join(f"{k}={prep[k]}" for k in ("source_format", "min_per_class",
                                                     "val_per_class", "image_size") if k in prep)
        return (f"[bold cyan]dataset[/] {node.get('name')}  fingerprint "
                f"{str(node.get('fingerprint'))[:12]}  {node.get('uri')}\n"
                f"images: {images or '?'}; classes {node.get('classes', '?')} "
                f"({node.get('hierarchy', '?')}); excluded subtrees: {excluded}"
                + (f"\nrecipe: {recipe}" if recipe else ""))
    if kind == "run":
        recipe = node.get("recipe") or {}
        shown = ", ".join(f"{k}={v}" for k, v in recipe.items() if k not in ("name", "kind"))
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in (node.get("metrics") or {}).items()
                            if k.startswith("val") and "level" not in k)
        return (f"[bold magenta]{node.get('task') or 'run'} run[/] {node['run_id']} "
                f"{node.get('name') or ''} [{node.get('status')}]\n"
                f"recipe: {shown or '?'}\nmetrics: {metrics or 'none'}")
    aliases = " ".join(f"@{a}" for a in node.get("aliases") or [])
    epoch = f", epoch {node['epoch']}" if node.get("epoch") else ""
    return (f"[bold green]{node['name']} v{node['version']}[/] {aliases} "
            f"({node.get('task')}, {node.get('arch')}, {node.get('weights')} weights{epoch}) "
            f"sha256 {str(node.get('weights_sha256') or '?')[:12]}" + _teacher(node))


def _teacher(node: dict[str, Any]) -> str:
    teacher = node.get("teacher")
    if not teacher:
        return ""
    line = (f"\ndistilled from teacher {teacher['teacher']} ({teacher.get('teacher_arch', '?')}, "
            f"sha256 {teacher.get('teacher_sha256', '?')[:12]}), loss "
            f"{teacher.get('distill_loss')}, alpha {teacher.get('distill_alpha')}")
    if teacher.get("distill_store"):
        line += (f"; teacher store {teacher['distill_store']} fingerprint "
                 f"{teacher.get('distill_store_fingerprint', '?')[:12]}")
    return line


def tree(lineage: dict[str, Any]) -> Tree:
    """dataset -> run -> version -> (dataset ->) run -> version, each a child of the last."""
    chain = lineage["chain"]
    root = Tree(_label(chain[0]))
    branch = root
    for node in chain[1:]:
        if node["kind"] == "dataset":
            # a fine-tune's own data: beside the chain, under the backbone it joins
            branch.add(_label(node))
            continue
        branch = branch.add(_label(node))
    return root
