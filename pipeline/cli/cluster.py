"""`capture deploy`: register the flows with a Prefect server (server mode)."""

from __future__ import annotations

from pipeline.cli.common import acting_user, app, console, settings


@app.command()
def deploy() -> None:
    """Register the work pools, the deployments (process-batch, process-items) and the automation that
    marks runs of dead workers Crashed; running it again changes nothing that is in place."""
    from pipeline.cluster import deploy as register
    from pipeline.store import open_store

    config = settings()
    changes = register(config)
    store = open_store(config)
    try:
        store.audit(acting_user(), "deploy", config.server.deployment, {"changed": changes})
    finally:
        store.close()
    if not changes:
        console.print("everything is in place already; nothing changed", highlight=False)
    for change in changes:
        console.print(f"registered {change}", highlight=False, markup=False)
    pools = f"{config.server.work_pool} (OCR) and {config.server.control_pool} (batch runs)"
    console.print(
        f"workers: `prefect worker start --pool {config.server.work_pool}` on each OCR host, and one "
        f"`prefect worker start --pool {config.server.control_pool}` on the central host (pools {pools})",
        highlight=False,
        markup=False,
    )
