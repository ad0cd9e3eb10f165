"""Knowledge distillation: the losses, the registered teacher, and the offline teacher store.

The training side is a task (`hypernym.train.tasks.distill.DistillTask`, from a recipe's
``train.distill``); this package holds what it is made of (docs/distillation.md):

- `losses`: ``kl`` (Hinton), ``semantic`` (MIIL's semantic KD), ``semantic_kl``;
- `teacher`: resolving, checking and running a registered teacher;
- `views`, `store_format`, `codec`: the store's views, its files, and replaying it in the loader;
- `store_job`, `teach`, `cli`: ``hypernym distill store``, as Ray work over the shards.
"""
