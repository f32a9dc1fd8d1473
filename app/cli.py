"""The ``minis3`` command: run everything on one machine, and operator commands."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from config import embedded
from config.logging import configure_logging
from config.metrics import prepare_metrics_dir
from config.settings import Settings


def _spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Start embedded services when no URLs are configured, then web, S3, worker, beat and flower."""
    settings = Settings.from_env()
    env = dict(os.environ)
    services: list[tuple[str, subprocess.Popen]] = []
    children: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        prepare_metrics_dir(settings, env, clean=True)
        if not settings.redis_url:
            port = embedded.free_port()
            services.append(("redis", embedded.start_redis(settings.var_dir, port)))
            env["MINIS3_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"minis3: embedded Redis on 127.0.0.1:{port} (data in {settings.var_dir}/redis)", flush=True)
        if not settings.mongo_url:
            port = embedded.free_port()
            services.append(("mongodb", embedded.start_mongo(settings.var_dir, port)))
            env["MINIS3_MONGO_URL"] = f"mongodb://127.0.0.1:{port}/"
            print(f"minis3: embedded MongoDB stand-in (nx-27017) on 127.0.0.1:{port}", flush=True)
        if services:
            embedded.publish_urls(settings.var_dir, {"redis_url": env["MINIS3_REDIS_URL"],
                                                     "mongo_url": env["MINIS3_MONGO_URL"]})
        bindir = os.path.dirname(sys.executable)
        celery = os.path.join(bindir, "celery")
        children.append(("web", _spawn([os.path.join(bindir, "gunicorn"), "-c", "python:config.gunicorn",
                                        "app.wsgi:app"], env)))
        if not settings.secret_key:
            from config.secretkey import FILENAME, load_or_create

            load_or_create(settings.var_dir)  # once, here, before several S3 workers look for it
            print(f"minis3: MINIS3_SECRET_KEY is unset: S3 secrets are sealed with the server key in "
                  f"{settings.var_dir / FILENAME} (keep it: without it no S3 secret can be read)", flush=True)
        children.append(("s3", _spawn([os.path.join(bindir, "gunicorn"), "-c", "python:config.gunicorn_s3",
                                       "app.s3wsgi:app"], env)))
        children.append(("worker", _spawn([celery, "-A", "workers.app", "worker", "-Q", "ingest,maintenance",
                                           "-c", str(settings.worker_concurrency), "--loglevel", "INFO"], env)))
        children.append(("beat", _spawn([celery, "-A", "workers.app", "beat", "--loglevel", "INFO",
                                         "--schedule", str(settings.var_dir / "celerybeat-schedule")], env)))
        if not args.no_flower:
            children.append(("flower", _spawn([celery, "-A", "workers.app", "flower", "--address=127.0.0.1",
                                               f"--port={settings.flower_port}"], env)))
        from app.auth import listen_host

        host = listen_host(Settings.from_env(env), announce=False)  # where gunicorn really binds
        embedded.wait_for_port(settings.port, timeout=60, proc=children[0][1], host=host)
        embedded.wait_for_port(settings.s3_port, timeout=60, proc=children[1][1], host=settings.s3_host)
        print(f"minis3: S3 API on http://{settings.s3_host}:{settings.s3_port}", flush=True)
        print(f"minis3: listening on http://{host}:{settings.port}/api "
              f"(flower: http://127.0.0.1:{settings.flower_port}); Ctrl-C stops everything", flush=True)
        while not stopping:
            for name, proc in children + services:
                if proc.poll() is not None:
                    print(f"minis3: {name} exited with {proc.returncode}; stopping", file=sys.stderr, flush=True)
                    exit_code = 1
                    stopping = True
                    break
            time.sleep(0.2)
    except Exception as exc:
        print(f"minis3: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, proc in reversed(children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(children):
            embedded.stop(proc, timeout=20)
        for _, proc in reversed(services):
            embedded.stop(proc)
        if services:
            embedded.withdraw_urls(settings.var_dir)
        print("minis3: stopped", flush=True)
    return exit_code


def _store():
    from pipeline.store import ObjectStore

    settings = Settings.from_env()
    if not (settings.redis_url and settings.mongo_url):  # the services `minis3 run` started, if any
        found = embedded.published_urls(settings.var_dir)
        settings = settings.with_overrides(redis_url=settings.redis_url or found.get("redis_url"),
                                           mongo_url=settings.mongo_url or found.get("mongo_url"))
    if not (settings.redis_url and settings.mongo_url):
        raise SystemExit("minis3: set MINIS3_REDIS_URL and MINIS3_MONGO_URL, or start `minis3 run` "
                         f"with MINIS3_VAR_DIR={settings.var_dir} first")
    store = ObjectStore.from_settings(settings)
    store.prepare()
    return store


def cmd_gc(args: argparse.Namespace) -> int:
    from pipeline.maintenance import collect_garbage

    report = collect_garbage(_store(), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["skipped_locked"]:
        print("gc: another GC run holds the lock; nothing done")
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for c in report["deleted"]:
            print(f"{verb} chunk {c['chunk']} on {c['node']} ({c['size']} bytes)")
        if report["chunks"] > len(report["deleted"]):
            print(f"... and {report['chunks'] - len(report['deleted'])} more chunk(s)")
        print(f"gc{' (dry run)' if args.dry_run else ''}: {verb} {report['chunks']} chunk(s), "
              f"{report['bytes']} bytes; {report['still_referenced']} still referenced")
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from app import celery_enqueue
    from pipeline.fsck import run_fsck

    store = _store()
    enqueue = celery_enqueue(store.settings) if args.repair else None
    report = run_fsck(store, repair=args.repair, enqueue=enqueue)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 0 if report.clean else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from pipeline.stats import store_stats
    from workers.celery import INGEST_QUEUE

    print(json.dumps(store_stats(_store(), INGEST_QUEUE), indent=2))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from app.auth import keys_command

    return keys_command(Settings.from_env(), args.keys_action, getattr(args, "tenant", None),
                        getattr(args, "key_id", None), s3=getattr(args, "s3", False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minis3", description="Mini-S3 object store")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="start web, S3, worker, beat and flower (and embedded services)")
    p.add_argument("--no-flower", action="store_true")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("keys", help="API keys and S3 keys: create (printed once), list, revoke")
    keys = p.add_subparsers(dest="keys_action", required=True)
    create = keys.add_parser("create", help="create a key for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--s3", action="store_true", help="an S3 access key id and secret instead of an API key")
    keys.add_parser("list", help="every key's id, tenant and state (never the key itself)")
    keys.add_parser("revoke", help="revoke a key by its id (or the key itself; AKMS...: an S3 key)").add_argument(
        "key_id")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("gc", help="delete chunks no file references (after the grace period)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("fsck", help="check chunks, files and nodes agree; exit code 0 only when clean")
    p.add_argument("--repair", action="store_true",
                   help="quarantine corrupt chunks, remove old strays, re-queue stuck files, fail lost files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_fsck)
    p = sub.add_parser("stats", help="files, logical and physical bytes, dedup ratio, nodes, queue, last GC")
    p.set_defaults(func=cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging(os.environ.get("MINIS3_LOG_LEVEL", "WARNING"))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
