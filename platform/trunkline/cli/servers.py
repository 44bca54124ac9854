"""Sub-commands that run processes: up, migrate, controlplane, gateway, worker, jobs, beat, sim."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trunkline.cli.arguments import TIME_SCALE_HELP, listen_port, time_scale
from trunkline.kit import logging as tlog
from trunkline.settings import load_settings


def register(sub: Any) -> None:
    up = sub.add_parser(
        "up", help="run the whole platform in one process (SQLite, simulated engines)"
    )
    up.add_argument(
        "--tenants",
        type=Path,
        default=Path("tenants"),
        metavar="DIR",
        help="the manifests to apply: tiers, catalog, tenants (default: tenants)",
    )
    up.add_argument("--time-scale", type=time_scale, default=1.0, help=TIME_SCALE_HELP)
    up.set_defaults(func=_up)

    migrate = sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    migrate.set_defaults(func=_migrate)

    cp = sub.add_parser("controlplane", help="run the control plane REST API")
    cp.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    cp.set_defaults(func=_controlplane)

    gw = sub.add_parser("gateway", help="run the OpenAI-compatible gateway (needs Redis)")
    gw.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes (default: TRUNKLINE_GATEWAY__WORKERS, 1)",
    )
    gw.set_defaults(func=_gateway)

    worker = sub.add_parser("worker", help="drain the usage stream into the ledger")
    worker.set_defaults(func=_worker)

    jobs = sub.add_parser(
        "jobs", help="run Celery workers: usage ingest, rollups, closing billing periods"
    )
    jobs.add_argument("--beat", action="store_true", help="also run the beat scheduler")
    jobs.add_argument("--concurrency", type=int, default=2, help="Celery's (default: 2)")
    jobs.add_argument(
        "--pool",
        default="prefork",
        choices=["prefork", "solo", "threads"],
        help="Celery's execution pool (default: prefork)",
    )
    jobs.set_defaults(func=_jobs)

    beat = sub.add_parser("beat", help="run the Celery beat scheduler (one per deployment)")
    beat.set_defaults(func=_beat)

    sim = sub.add_parser("sim", help="serve one simulated vLLM engine")
    sim.add_argument("--model", required=True, help="the model name it serves and answers as")
    sim.add_argument(
        "--profile",
        default="h100",
        help="the accelerator it models (default: h100; an unknown one lists them)",
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sim.add_argument(
        "--port", type=listen_port, default=8000, help="port to listen on (default: %(default)s)"
    )
    sim.add_argument("--seed", type=int, default=0, help="seed of its generated text (default: 0)")
    sim.add_argument("--time-scale", type=time_scale, default=1.0, help=TIME_SCALE_HELP)
    sim.set_defaults(func=_sim)


def _up(args: argparse.Namespace) -> int:
    from trunkline.apps.embedded import run_embedded
    from trunkline.apps.embedded_lock import running_instance

    settings = load_settings()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    if not args.tenants.is_dir():
        print(
            f"error: no manifests directory at {args.tenants} (use --tenants DIR)", file=sys.stderr
        )
        return 2
    if running := running_instance(settings.database.url):
        print(f"error: {running}", file=sys.stderr)  # rather than its ports, taken
        return 2
    busy = busy_ports(
        [
            ("gateway", settings.gateway.host, settings.gateway.port, "TRUNKLINE_GATEWAY__PORT"),
            (
                "control plane",
                settings.controlplane.host,
                settings.controlplane.port,
                "TRUNKLINE_CONTROLPLANE__PORT",
            ),
        ]
    )
    if busy:
        print("error: " + "; ".join(busy), file=sys.stderr)
        return 2
    asyncio.run(run_embedded(settings, args.tenants, time_scale=args.time_scale))
    return 0


def busy_ports(binds: Sequence[tuple[str, str, int, str]]) -> list[str]:
    """What of (name, host, port, setting) cannot be listened on, and the setting to move it:
    found before anything starts, rather than as the server's traceback after."""
    busy = []
    for name, host, port, setting in binds:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind((host, port))
            except OSError as exc:
                busy.append(
                    f"the {name} cannot listen on {host}:{port} ({exc.strerror}): "
                    f"stop what uses it or set {setting}"
                )
    return busy


def _migrate(_args: argparse.Namespace) -> int:
    from trunkline.kit.migrate import upgrade

    settings = load_settings()
    tlog.configure(settings.log_level)
    settings.check_production()
    upgrade(settings.database.url)
    print("database is at the latest migration")
    return 0


def _uvicorn(
    factory: str,
    host: str,
    port: int,
    workers: int,
    *,
    connections: dict[str, Any],
    drain_s: int | None = None,
) -> None:
    """Serve ``factory``'s app, ``connections`` held as
    :func:`trunkline.apps.serving.connection_options` says."""
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=None,  # its lines (the supervisor's of --workers N too) as tlog configured
        access_log=False,
        timeout_graceful_shutdown=drain_s,
        **connections,
    )


def _controlplane(args: argparse.Namespace) -> int:
    from trunkline.apps.serving import CONTROL_PLANE, connection_options
    from trunkline.kit.migrate import require_existing
    from trunkline.kit.shutdown_delay import drain_after_delay_s

    settings = load_settings()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    settings.check_production("controlplane")
    require_existing(settings.database.url)
    cp = settings.controlplane
    if busy := busy_ports([("control plane", cp.host, cp.port, "TRUNKLINE_CONTROLPLANE__PORT")]):
        print("error: " + "; ".join(busy), file=sys.stderr)  # before it publishes anything
        return 2
    from trunkline.kit.metrics_share import workers_metrics_dir

    with workers_metrics_dir(args.workers):  # a scrape of any worker shows them all
        _uvicorn(
            "trunkline.apps.production:controlplane_app",
            cp.host,
            cp.port,
            args.workers,
            connections=connection_options(
                header_timeout_s=cp.header_timeout_s,
                keep_alive_timeout_s=cp.keep_alive_timeout_s,
                name=CONTROL_PLANE,
            ),
            drain_s=drain_after_delay_s(cp.shutdown_delay_s, cp.drain_timeout_s),
        )
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from trunkline.apps.serving import GATEWAY, connection_options
    from trunkline.kit.shutdown_delay import drain_after_delay_s

    settings = load_settings()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    settings.check_production("gateway")
    gw = settings.gateway
    if busy := busy_ports([("gateway", gw.host, gw.port, "TRUNKLINE_GATEWAY__PORT")]):
        print("error: " + "; ".join(busy), file=sys.stderr)
        return 2
    from trunkline.kit.metrics_share import workers_metrics_dir

    workers = args.workers or gw.workers
    with workers_metrics_dir(workers):  # a scrape of any worker shows them all
        _uvicorn(
            "trunkline.apps.production:gateway_app",
            gw.host,
            gw.port,
            workers,
            connections=connection_options(
                header_timeout_s=gw.header_timeout_s,
                keep_alive_timeout_s=gw.keep_alive_timeout_s,
                name=GATEWAY,
            ),
            drain_s=drain_after_delay_s(gw.shutdown_delay_s, gw.drain_timeout_s),
        )
    return 0


def _worker(_args: argparse.Namespace) -> int:
    import redis

    from trunkline.apps.production import run_worker
    from trunkline.kit.migrate import require_existing
    from trunkline.worker.jobs import load_job_settings

    settings = load_settings()
    settings.check_production()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    require_existing(settings.database.url)
    jobs = load_job_settings()
    if jobs.metrics_port is not None:  # found before the worker starts, not as its traceback
        metrics = ("worker's metrics", jobs.metrics_host, jobs.metrics_port)
        if busy := busy_ports([(*metrics, "TRUNKLINE_JOBS__METRICS_PORT")]):
            print("error: " + "; ".join(busy), file=sys.stderr)
            return 2
    try:
        run_worker(settings)
    except redis.AuthenticationError as exc:
        refused = f"Redis refused the worker's credentials ({exc})"
        print(f"error: {refused}; check TRUNKLINE_REDIS__URL", file=sys.stderr)
        return 2
    return 0


def _celery(argv: list[str]) -> int:
    from trunkline.kit.migrate import require_current, require_existing
    from trunkline.worker.app import create_celery_app, run_celery
    from trunkline.worker.jobs import load_job_settings

    settings = load_settings()
    settings.check_production()
    tlog.configure(settings.log_level, json_lines=settings.log_json)
    require_existing(settings.database.url)
    require_current(settings.database.url)  # every task would fail on another schema
    if settings.redis.url:
        from trunkline.apps.runtime import REDIS_TIMEOUT_S
        from trunkline.kit.redis_eviction import warn_if_redis_evicts

        warn_if_redis_evicts(settings.redis.url, timeout_s=REDIS_TIMEOUT_S)
    run_celery(create_celery_app(settings, load_job_settings()), argv)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    argv = ["worker", "--loglevel=INFO", f"--concurrency={args.concurrency}", f"--pool={args.pool}"]
    return _celery([*argv, "--beat"] if args.beat else argv)


def _beat(_args: argparse.Namespace) -> int:
    return _celery(["beat", "--loglevel=INFO"])


def _sim(args: argparse.Namespace) -> int:
    import uvicorn

    from trunkline.apps.serving import base_url
    from trunkline.engines import create_sim_app, get_profile

    profile = get_profile(args.profile)
    if busy := busy_ports([("simulated engine", args.host, args.port, "--port")]):
        print("error: " + "; ".join(busy), file=sys.stderr)
        return 2
    app = create_sim_app(
        model=args.model, profile=profile, seed=args.seed, time_scale=args.time_scale
    )
    print(  # uvicorn's own lines are off (warnings only): without it, nothing said it serves
        f"simulated vLLM engine ({profile.name}) serving {args.model} at "
        f"{base_url(args.host, args.port)}/v1; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
