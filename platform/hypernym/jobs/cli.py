"""`hypernym submit` and `hypernym jobs ...` (thin over submit.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from hypernym.errors import HypernymError
from hypernym.jobs import submit as jobs

__all__ = ["jobs_app", "submit"]

out = Console(soft_wrap=True)  # data (ids, logs) must not be re-wrapped at 80 columns
err = Console(stderr=True, soft_wrap=True)  # printed commands stay copy-pastable
jobs_app = typer.Typer(no_args_is_help=True)
Address = Annotated[
    str | None,
    typer.Option("--address", help="Ray dashboard URL (default: RAY_API_SERVER_ADDRESS, "
                 "RAY_ADDRESS or http://127.0.0.1:8265)"),
]


def submit(
    recipe: Annotated[Path | None, typer.Argument(help="a recipe YAML (optional with "
                                                  "--resume: the run's own)")] = None,
    address: Address = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="key.path=value")] = None,
    upload_package: Annotated[
        bool, typer.Option(help="ship this hypernym package with the job (py_modules)")
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream logs until done")] = False,
    forward_credentials: Annotated[bool, typer.Option(
        "--forward-credentials", help="also send this shell's credentials (AWS keys, MLflow "
        "password...) with the job: anyone who can see the cluster can read them")] = False,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="RUN_ID", help="continue this run from its newest whole checkpoint "
        "(`hypernym runs list` shows the unfinished ones)")] = None,
) -> None:
    """Run a recipe on a Ray cluster (validated here first) through the Jobs API.

    Settings travel with the job (MLFLOW_TRACKING_URI, HYPERNYM_*, AWS_ENDPOINT_URL...); the
    cluster uses its own credentials unless --forward-credentials is given.
    """
    if forward_credentials:
        err.print("[yellow]warning:[/] " + jobs.FORWARD_WARNING.format(
            names="those set in this shell"))
    with tempfile.TemporaryDirectory() as tmp:
        if recipe is None:
            if resume is None:
                raise HypernymError("give a recipe file (or --resume RUN_ID to continue a run)")
            from hypernym.runs import write_recipe_of_run

            recipe = write_recipe_of_run(resume, Path(tmp) / "recipe.yaml")
        job_id = jobs.submit_recipe(recipe, address=address, overrides=set_ or [],
                                    upload_package=upload_package,
                                    forward_credentials=forward_credentials, resume=resume)
    where = f" --address {address}" if address else ""
    err.print(f"submitted [bold]{job_id}[/] to {jobs.resolve_address(address)}")
    if not follow:
        err.print(f"follow: hypernym jobs logs {job_id} --follow{where}\n"
                  f"stop:   hypernym jobs stop {job_id}{where}")
        out.print(job_id)
        return
    for chunk in jobs.job_logs(job_id, address=address, follow=True):
        out.print(chunk, end="", markup=False, highlight=False)
    status = jobs.wait_for(job_id, address=address)
    err.print(f"job {job_id}: {status}")
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@jobs_app.command()
def status(job_id: str, address: Address = None) -> None:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED (and Ray's message, if any, on stderr)."""
    info = jobs.job_info(job_id, address=address)
    out.print(str(info.status.value))
    if info.message:
        err.print(info.message, markup=False, highlight=False)


@jobs_app.command()
def logs(job_id: str, address: Address = None,
         follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """The job's output (streamed with --follow)."""
    for chunk in jobs.job_logs(job_id, address=address, follow=follow):
        out.print(chunk, end="", markup=False, highlight=False)


@jobs_app.command()
def stop(job_id: str, address: Address = None) -> None:
    """Ask the cluster to stop the job."""
    stopped = jobs.stop_job(job_id, address=address)
    out.print(f"stop requested for {job_id}" if stopped else f"{job_id} had already ended")


@jobs_app.command("list")
def list_(address: Address = None) -> None:
    """Jobs on the cluster, oldest first."""
    table = Table(Column("job id", no_wrap=True), Column("status", no_wrap=True), "entrypoint",
                  Column("kind", no_wrap=True))
    for job in jobs.list_jobs(address=address):
        table.add_row(job.submission_id or job.job_id or "", str(job.status.value),
                      job.entrypoint[:60], (job.metadata or {}).get("hypernym.kind", ""))
    out.print(table)
