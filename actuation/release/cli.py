"""``fieldloop release``: the signed release repository an operator builds and devices read.

``init`` creates the keys and the repository, ``publish`` signs an approved model version
into a fleet's role, ``status`` shows roles, keys and what each fleet runs, ``root``
prints the trusted root a device is provisioned with, ``rotate`` replaces a role's key and
``refresh`` renews signatures near their expiry (the release DAG runs it). Every command
that changes the repository mirrors it to S3 afterwards when ``--s3`` or
``FIELDLOOP_RELEASE_S3`` names a bucket. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from fieldloop.console import ErrorReportingGroup, config_of, console, stdout_for_json

_JSON = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
_S3 = click.option(
    "--s3",
    "s3_uri",
    default=None,
    metavar="s3://BUCKET/PREFIX",
    help="Mirror the repository to this bucket afterwards (default: FIELDLOOP_RELEASE_S3, else none).",
)


@click.group(cls=ErrorReportingGroup)
def release() -> None:
    """The signed release repository (TUF): publish approved models to fleets, rotate keys."""


def open_repository(cfg: Any) -> Any:
    """The site's release repository (``cfg.release_dir``), its location checked by the residency guard."""
    from actuation.contract import load_fleets
    from actuation.release.repository import Repository
    from actuation.signing import KeyStore
    from fieldloop.residency import ResidencyGuard

    guard = ResidencyGuard.from_config(cfg)
    return Repository(cfg.release_dir, KeyStore(cfg.home), load_fleets(), check_location=guard.check)


def mirror_release(cfg: Any, s3_uri: str | None = None) -> dict[str, Any] | None:
    uri = s3_uri or cfg.release.s3
    if not uri:
        return None
    import boto3

    from actuation.release.s3 import mirror
    from fieldloop.residency import ResidencyGuard

    client = boto3.client("s3", endpoint_url=cfg.s3.endpoint_url)
    done = mirror(cfg.release_dir, uri, client, ResidencyGuard.from_config(cfg).check)
    return {"uri": done.uri, "uploaded": len(done.uploaded), "unchanged": done.unchanged}


def _say(lines: list[str], mirrored: dict[str, Any] | None, as_json: bool, data: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps({**data, "done": lines, "mirrored": mirrored}, indent=2, default=str))
        return
    for line in lines:
        console.print(f"  {line}")
    if mirrored:
        m = mirrored
        console.print(f"  mirrored to {m['uri']}: {m['uploaded']} uploaded, {m['unchanged']} unchanged")


@release.command("init")
@_S3
@_JSON
@click.pass_context
def init(ctx: click.Context, s3_uri: str | None, as_json: bool) -> None:
    """Create the signing keys and the repository's first metadata (idempotent: adds new fleets)."""
    cfg = config_of(ctx)
    repo = open_repository(cfg)
    done = repo.init() or [f"the repository in {repo.dir} is up to date; nothing to do"]
    _say(done, mirror_release(cfg, s3_uri), as_json, {"repository": str(repo.dir), "root_version": repo.root_version()})


@release.command("publish")
@click.option("--model", required=True, help="Registered model name, e.g. fieldloop.vehicle-longitudinal.")
@click.option("--version", "version", required=True, type=click.IntRange(min=1), help="Model version (approved).")
@click.option("--fleet", required=True, help="Fleet to publish to (actuation/fleets.toml).")
@click.option(
    "--direct",
    is_flag=True,
    help="Replace what the fleet runs at once, without a staged rollout (an emergency fix).",
)
@_S3
@_JSON
@click.pass_context
def publish_cmd(
    ctx: click.Context, model: str, version: int, fleet: str, direct: bool, s3_uri: str | None, as_json: bool
) -> None:
    """Check an approved version (alias, attestation, policy, tenant) and sign it into a fleet's role.

    This is how a fleet gets its first release, which becomes its champion (MLflow's
    `champion` alias, when the model has none). A fleet that runs a release already gets new
    versions through `fieldloop rollout start`, stage by stage; `--direct` replaces it at once.
    """
    from mlflow import MlflowClient

    from actuation.contract import load_fleets
    from actuation.errors import ReleaseError
    from actuation.release.publish import check, first_champion, publish

    # MLflow draws a progress bar per artifact on stderr; three small files need none
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = config_of(ctx)
    try:
        the_fleet = load_fleets().get(fleet)
    except KeyError as e:
        raise ReleaseError(str(e.args[0])) from e
    repo = open_repository(cfg)
    if not repo.exists():
        raise ReleaseError(f"no release repository in {repo.dir}; create it with `fieldloop release init`")
    running = repo.pointer(fleet)
    _refuse_over_a_champion(cfg, fleet, running, model, version, direct)
    client = MlflowClient(cfg.mlflow.uri)
    with stdout_for_json(as_json):
        approved = check(client, repo, model, version, the_fleet)
        done = publish(repo, approved)
        if done.changed and running is None:
            first_champion(client, model, version, fleet)
        mirrored = mirror_release(cfg, s3_uri) if done.changed else None
    if done.changed:
        role = _role(fleet)
        lines = [
            f"published {model} v{version} to fleet {fleet} ({role} v{repo.targets(role).signed.version}); "
            f"devices fetch it from {cfg.release.base_url}/metadata/"
        ]
    else:
        lines = [f"fleet {fleet} already runs {model} v{version}; nothing was written"]
    data = {
        "model": model,
        "version": version,
        "fleet": fleet,
        "changed": done.changed,
        "pointer": json.loads(done.pointer.model_dump_json()),
        "written": done.written,
    }
    _say(lines, mirrored, as_json, data)


def _refuse_over_a_champion(cfg: Any, fleet: str, running: Any, model: str, version: int, direct: bool) -> None:
    from actuation.errors import ReleaseError
    from actuation.rollout.audit import RolloutLog

    if running is None or ((running.active.model, running.active.version) == (model, version) and not running.stage):
        return
    rollout = RolloutLog.for_config(cfg).current(fleet)
    if rollout is not None and not rollout.done:
        raise ReleaseError(
            f"fleet {fleet} is rolling out {rollout.last.model} v{rollout.last.version} (rollout {rollout.id}, stage "
            f"{rollout.last.stage}): end it first (`fieldloop rollout rollback --fleet {fleet}`)"
        )
    if not direct:
        raise ReleaseError(
            f"fleet {fleet} runs {running.active.model} v{running.active.version}: a new version reaches it stage by "
            f"stage, judged by the fleet's telemetry: `fieldloop rollout start --model {model} --version {version} "
            f"--fleet {fleet}`. To replace it at once (an emergency fix), add --direct"
        )


def _role(fleet: str) -> str:
    from actuation.contract import fleet_role

    return fleet_role(fleet)


@release.command("status")
@_JSON
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Roles (version, expiry, keys by id), the guardrail key devices trust, and what each fleet runs."""
    from rich.table import Table

    from actuation.contract import fleet_role
    from actuation.errors import ReleaseError

    cfg = config_of(ctx)
    repo = open_repository(cfg)
    if not repo.exists():
        raise ReleaseError(f"no release repository in {repo.dir}; create it with `fieldloop release init`")
    now = datetime.now(UTC)
    due = {r.name for r in repo.due()}
    roles = [
        {
            "role": r.name,
            "version": r.version,
            "expires": r.expires.isoformat(),
            "expired": r.expires <= now,
            "renewal_due": r.name in due,
            "keyids": list(r.keyids),
            "threshold": r.threshold,
        }
        for r in repo.roles()
    ]
    fleets = []
    for f in repo.fleets.fleet:
        pointer = repo.pointer(f.name) if fleet_role(f.name) in {r["role"] for r in roles} else None
        runs = None
        if pointer is not None:
            active, stage = pointer.active, pointer.stage
            runs = {"model": active.model, "version": active.version, "issued_at": str(pointer.issued_at)}
            if stage is not None:
                runs["stage"] = {
                    "rollout": stage.rollout_id,
                    "name": stage.name,
                    "mode": stage.mode,
                    "share": stage.share,
                    "candidate": stage.candidate.version,
                }
        fleets.append({"fleet": f.name, "task": f.task, "tenant": f.tenant, "runs": runs})
    guardrail = sorted(repo.guardrail_keys())
    data = {
        "repository": str(repo.dir),
        "url": cfg.release.base_url,
        "roles": roles,
        "guardrail_keyids": guardrail,
        "fleets": fleets,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"release repository {repo.dir} (served at {cfg.release.base_url})")
    for col in ("role", "version", "expires", "keys (threshold)"):
        table.add_column(col)
    for r in roles:
        mark = " [red]expired[/]" if r["expired"] else " [yellow]renew[/]" if r["renewal_due"] else ""
        keys = ", ".join(k[:12] for k in r["keyids"]) + f" ({r['threshold']})"
        table.add_row(r["role"], str(r["version"]), r["expires"][:16] + mark, keys)
    console.print(table)
    console.print(f"  guardrail key devices verify attestations with: {', '.join(k[:12] for k in guardrail) or 'none'}")
    for f in fleets:
        runs = f"{f['runs']['model']} v{f['runs']['version']}" if f["runs"] else "nothing published yet"
        if f["runs"] and f["runs"].get("stage"):
            s = f["runs"]["stage"]
            runs += f"; rollout {s['rollout']}: v{s['candidate']} in stage {s['name']} ({s['mode']}, {s['share']:.0%})"
        console.print(f"  fleet {f['fleet']} ({f['task']}, tenant {f['tenant'] or '-'}): {runs}")


@release.command("root")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write it to FILE.")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="An older root version.")
@_JSON
@click.pass_context
def root(ctx: click.Context, out: Path | None, version: int | None, as_json: bool) -> None:
    """Print the trusted root a device is provisioned with (its bootstrap), or write it to --out."""
    import hashlib

    repo = open_repository(config_of(ctx))
    body = repo.root_bytes(version)
    if out is None and not as_json:
        click.echo(body.decode())
        return
    if out is not None:
        out.write_bytes(body)
    signed = json.loads(body)["signed"]
    summary = {
        "version": signed["version"],
        "expires": signed["expires"],
        "sha256": hashlib.sha256(body).hexdigest(),
        "root_keyids": signed["roles"]["root"]["keyids"],
        "threshold": signed["roles"]["root"]["threshold"],
        "out": str(out) if out else None,
    }
    if as_json:
        click.echo(json.dumps(summary if out else {**summary, "root": json.loads(body)}, indent=2))
    else:
        console.print(f"root v{summary['version']} (sha256 {summary['sha256'][:16]}) written to {out}")


@release.command("rotate")
@click.option("--role", required=True, help="root, targets, snapshot, timestamp or fleet-<name>.")
@_S3
@_JSON
@click.pass_context
def rotate(ctx: click.Context, role: str, s3_uri: str | None, as_json: bool) -> None:
    """Replace a role's signing key: metadata re-signed, the old key no longer trusted.

    root: a new root version with two new offline keys, signed by the old and the new ones.
    """
    cfg = config_of(ctx)
    repo = open_repository(cfg)
    done = repo.rotate(role)
    _say(done, mirror_release(cfg, s3_uri), as_json, {"role": role, "root_version": repo.root_version()})


@release.command("refresh")
@click.option("--root", "with_root", is_flag=True, help="Renew the root too (needs the two offline root keys).")
@_S3
@_JSON
@click.pass_context
def refresh(ctx: click.Context, with_root: bool, s3_uri: str | None, as_json: bool) -> None:
    """Renew the signatures near their expiry (timestamp within 12 h, snapshot 3 d, roles 30 d). Idempotent.

    The root (within 60 d) only with --root: the scheduled refresh runs with the online keys alone.
    """
    cfg = config_of(ctx)
    repo = open_repository(cfg)
    renewed = repo.refresh(with_root)
    mirrored = mirror_release(cfg, s3_uri) if renewed else None
    root = next(r for r in repo.roles() if r.name == "root")
    root_due = root in repo.due()
    if as_json:
        click.echo(json.dumps({"renewed": renewed, "root_due": root_due, "mirrored": mirrored}, indent=2))
        return
    if not renewed:
        soonest = min(repo.roles(), key=lambda r: r.expires)
        when = f"{soonest.expires:%Y-%m-%d %H:%M} UTC"
        console.print(f"  nothing near expiry; the first to expire is {soonest.name} at {when}")
    _say([f"renewed {line}" for line in renewed], mirrored, False, {})
    if root_due:
        console.print(
            f"  [yellow]root expires {root.expires:%Y-%m-%d} UTC[/]: bring the offline root keys and run "
            "`fieldloop release refresh --root`"
        )
