"""The ``hypernym`` command. Thin: parse arguments, call the library, print.

Every stage is a library function taking a validated recipe; ``hypernym run RECIPE`` and the
stage commands call `hypernym.recipes.run_recipe`, the function a submitted job calls on the
cluster, and print what it returns.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hypernym.errors import HypernymError

__all__ = ["app", "main"]

console = Console(stderr=True, soft_wrap=True)  # commands stay copy-pastable
app = typer.Typer(
    name="hypernym",
    help="Pretrain image backbones at ImageNet-21K scale on Ray; transfer them to your data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe key: key.path=value (repeatable)."),
]


@app.callback()
def _global(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Ray's and MLflow's own logs too.")
    ] = False,
) -> None:
    from hypernym.runtime import configure_logging

    configure_logging(verbose=verbose)


def _run(recipe, *, resume: str | None = None, in_process: bool = False) -> None:
    from hypernym.recipes import describe, run_recipe

    result = run_recipe(recipe, resume=resume, in_process=in_process)
    for line in describe(recipe, result):
        console.print(line)


def _load(recipe_path: Path | None, overrides: list[str] | None, kind: str | None = None,
          resume: str | None = None):
    from hypernym.config import load_recipe

    if recipe_path is None:  # a resume without a file: the recipe the run logged
        if resume is None:
            raise HypernymError("give a recipe file (or --resume RUN_ID to continue a run)")
        from hypernym.runs import recipe_of_run

        recipe = recipe_of_run(resume, overrides)
        recipe_path = Path(f"the recipe of run {resume}")
    else:
        recipe = load_recipe(recipe_path, overrides or [])
    if kind is not None and recipe.kind != kind:
        raise HypernymError(f"{recipe_path} is a {recipe.kind!r} recipe; use `hypernym run` for it")
    if resume and recipe.kind == "prepare":
        raise HypernymError("--resume continues a training run; a prepare recipe starts over")
    return recipe


ResumeOpt = Annotated[str | None, typer.Option(
    "--resume", metavar="RUN_ID", help="continue this MLflow run from its newest whole "
    "checkpoint; without RECIPE, with the recipe the run logged (scaling may differ; the "
    "model and data may not)")]
RecipeArg = Annotated[Path | None, typer.Argument(help="a recipe YAML (optional with --resume)")]


@app.command()
def run(recipe: RecipeArg = None, set_: SetOpt = None, resume: ResumeOpt = None) -> None:
    """Run any recipe (prepare, pretrain or finetune) here, on local Ray or RAY_ADDRESS."""
    _run(_load(recipe, set_, resume=resume), resume=resume)


@app.command()
def prepare(
    recipe: Annotated[Path | None, typer.Argument(help="a prepare recipe YAML")] = None,
    source: Annotated[str | None, typer.Option(help="images: winter21 tars or folders")] = None,
    output: Annotated[str | None, typer.Option(help="dataset directory to write")] = None,
    set_: SetOpt = None,
) -> None:
    """Prepare raw images into WebDataset shards + manifest.json."""
    from hypernym.config import apply_overrides, parse_recipe

    overrides = list(set_ or [])
    overrides += [f"source={source}"] if source else []
    overrides += [f"output={output}"] if output else []
    if recipe is not None:
        _run(_load(recipe, overrides, kind="prepare"))
    else:
        _run(parse_recipe(apply_overrides({}, overrides), source="--set", kind="prepare"))


InProcessOpt = Annotated[bool, typer.Option(
    "--in-process", help="train one worker in this process, without Ray (the same core, MLflow "
    "run, checkpoints and registration): for a laptop, a notebook's data, a quick try")]


@app.command()
def pretrain(recipe: RecipeArg = None, set_: SetOpt = None, resume: ResumeOpt = None,
             in_process: InProcessOpt = False) -> None:
    """Pretrain a timm model on a prepared dataset with Ray Train."""
    _run(_load(recipe, set_, kind="pretrain", resume=resume), resume=resume,
         in_process=in_process)


@app.command()
def finetune(recipe: RecipeArg = None, set_: SetOpt = None, resume: ResumeOpt = None,
             in_process: InProcessOpt = False) -> None:
    """Fine-tune a registered backbone on domain data."""
    _run(_load(recipe, set_, kind="finetune", resume=resume), resume=resume,
         in_process=in_process)


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="where demo data goes (default: <home>/demo)")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Run the whole pipeline on generated data: prepare, pretrain, register, fine-tune, pull."""
    from hypernym.config import apply_overrides
    from hypernym.demo import DemoConfig, run_demo

    try:
        cfg = DemoConfig.model_validate(apply_overrides({}, set_ or []))
    except ValueError as exc:
        raise HypernymError(f"invalid demo settings: {exc}") from None
    run_demo(cfg, workdir=workdir)


@app.command()
def info() -> None:
    """Show where hypernym keeps things and which services it talks to."""
    import hypernym
    from hypernym.settings import get_settings

    s = get_settings()
    console.print(f"hypernym {hypernym.__version__}")
    console.print(f"home:         {s.home}")
    console.print(f"tracking:     {s.tracking_uri}")
    console.print(f"artifacts:    {s.artifact_root or 'the tracking server default'}")
    console.print(f"storage:      {s.storage}")
    if s.shared_fs:
        console.print(f"shared fs:    {', '.join(map(str, s.shared_fs))}")
    console.print(f"ray:          {s.ray_address or 'local (started on demand)'}")
    console.print(f"mlflow ui:    {s.mlflow_ui_command()}")


def _mount() -> None:
    # Sub-apps live beside the library code they drive; this module only composes them.
    from hypernym.data.cli import data_app
    from hypernym.deploy.cli import deploy_app
    from hypernym.gpucheck.cli import gpu_check
    from hypernym.jobs.cli import jobs_app, submit
    from hypernym.registry.cli import models_app
    from hypernym.runs.cli import runs_app
    from hypernym.serving.cli import serve
    from hypernym.taxonomy.cli import taxonomy_app
    from hypernym.train.distill.cli import distill_app
    from hypernym.transfer.cli import contamination, eval_model
    from hypernym.transfer.probe_cli import probe
    from hypernym.transfer.sweep_cli import sweep

    app.command(name="submit")(submit)
    app.command(name="serve")(serve)
    app.command(name="gpu-check")(gpu_check)
    app.command(name="sweep")(sweep)
    app.add_typer(jobs_app, name="jobs", help="Follow and stop submitted jobs.")
    app.add_typer(models_app, name="models",
                  help="Registered models: list, show, pull, export, lineage, promote.")
    app.add_typer(runs_app, name="runs",
                  help="Unfinished training runs: list, show (and how to resume), mark-failed.")
    app.add_typer(taxonomy_app, name="taxonomy", help="The WordNet hierarchy of the classes.")
    app.add_typer(data_app, name="data", help="Inspect prepared datasets.")
    app.add_typer(deploy_app, name="deploy", help="Kubernetes manifests (KubeRay) for a recipe.")
    app.add_typer(distill_app, name="distill", help="Knowledge distillation: teacher stores.")
    app.command(name="eval")(eval_model)
    app.command(name="contamination")(contamination)
    app.command(name="probe")(probe)


_mount()


def main() -> None:
    """Console entry point: user errors print one clear message, without a traceback."""
    try:
        app()
    except HypernymError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
