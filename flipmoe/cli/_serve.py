"""`flipmoe serve`: the HTTP API on Ray Serve (incident jobs, experts, OpenAI-compatible chat)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from flipmoe.cli._rca import add_history_argument, add_model_arguments, history_path, model_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the HTTP API on Ray Serve",
        description="Serve incident analysis (POST /v1/incidents, and Alertmanager's webhook POST /v1/alertmanager "
                    "with the backends and delivery targets of --config), routed and per-expert generation and an "
                    "OpenAI-compatible /v1/chat/completions on a local Ray (or a cluster with --address). "
                    "Bearer tokens come from --token or FLIPMOE_API_TOKENS; they are required when listening "
                    "beyond localhost unless --auth off.")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    parser.add_argument("--bundle", help="model bundle directory (default: the nano bundle)")
    parser.add_argument("--no-model", action="store_true", help="serve incident analysis only, without experts")
    add_history_argument(parser)
    add_model_arguments(parser)
    parser.add_argument("--data-dir", help="jobs database, uploaded incidents and reports (default "
                                           "$XDG_STATE_HOME/flipmoe/serve, i.e. ~/.local/state/flipmoe/serve)")
    parser.add_argument("--token", help="accepted bearer token(s), comma-separated")
    parser.add_argument("--auth", choices=("auto", "on", "off"), default="auto",
                        help="bearer-token authentication (auto: on unless listening on localhost)")
    parser.add_argument("--workers", type=int, default=2, help="job threads in the ingress replica (default 2)")
    parser.add_argument("--director-replicas", type=int, default=1, help="Director replicas (default 1)")
    parser.add_argument("--allow-server-paths", metavar="ROOT",
                        help="accept {\"path\": ...} submissions of incident directories under ROOT")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--upload-quota-gib", type=float, default=16.0,
                        help="disk space for uploaded incidents and their reports (default 16 GiB)")
    parser.add_argument("--keep-jobs", type=int, default=1000,
                        help="finished jobs kept with their files; older ones are removed (default 1000)")
    parser.add_argument("--keep-days", type=float, default=7.0,
                        help="finished jobs are removed with their files after this many days (default 7)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Ray is imported only after start_ray: it decides at import which address a local Ray listens on.
    from director.runtime import start_ray
    from flipmoe.serve.app import ServeSettings, api_tokens, default_data_dir
    from flipmoe.serve.security import is_loopback

    data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()
    settings = ServeSettings(data_dir=data_dir, tokens=api_tokens(args.token), auth=args.auth,
                             host=args.host, workers=args.workers,
                             allow_server_paths=bool(args.allow_server_paths),
                             server_path_root=Path(args.allow_server_paths).resolve() if args.allow_server_paths
                             else None,
                             upload_quota_bytes=int(args.upload_quota_gib * 1024**3),
                             keep_finished_jobs=args.keep_jobs, keep_finished_seconds=args.keep_days * 86400)
    if settings.auth_required and not settings.tokens:
        from flipmoe.errors import FlipmoeInputError

        raise FlipmoeInputError(f"listening on {args.host} requires a bearer token",
                                hint="pass --token or set FLIPMOE_API_TOKENS (or --auth off deliberately)")
    history = history_path(args)  # a bad folder or model file is reported before Ray starts
    models = model_paths(args)
    bundle = None
    if not args.no_model:
        from router.bundle import ensure_bundle

        bundle = ensure_bundle(Path(args.bundle) if args.bundle else None, progress=True)
    stopping = threading.Event()
    _on_stop_signals(stopping)
    try:
        start_ray(address=args.address, loopback_only=is_loopback(args.host))
        # Again: Ray's C++ core installs a failure handler for SIGTERM that dumps every thread's stack.
        # A stop request is no failure.
        _on_stop_signals(stopping)
        from ray import serve

        from flipmoe.serve.deployments import build_application

        serve.start(http_options={"host": args.host, "port": args.port})
        # Replicas are sized to the CPUs this Ray has (build_application), so serve.run becomes ready on 2 cores.
        serve.run(build_application(settings, bundle=bundle, director_replicas=args.director_replicas,
                                    config=args.config_obj, history=history, **models),
                  name="flipmoe", route_prefix="/")
        print(f"flipmoe serving on http://{args.host}:{args.port} (bundle: {bundle or 'none'}; auth "
              f"{'on' if settings.auth_required else 'off'}; data in {settings.data_dir}); Ctrl-C stops", flush=True)
        stopping.wait()
    except _Stopped:
        pass
    finally:
        _shut_down()
    return 0


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived: leave the wait (or a start still under way) and shut down."""


def _on_stop_signals(stopping: threading.Event) -> None:
    """SIGINT and SIGTERM stop the service cleanly; one that arrives during the shutdown is ignored."""

    def stop(signum: int, frame: object) -> None:
        if stopping.is_set():
            return  # a second Ctrl-C must not cut the shutdown short
        stopping.set()
        print(f"flipmoe: {signal.Signals(signum).name} received; shutting down", file=sys.stderr, flush=True)
        raise _Stopped

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def _shut_down() -> None:
    """Stop Serve's application and disconnect from Ray (stopping the local Ray this process started)."""
    import ray
    from ray import serve

    with contextlib.suppress(Exception):  # Serve may not have started
        serve.shutdown()
    ray.shutdown()
