"""The ``minis3`` command: run everything on one machine, and operator commands."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from contextlib import contextmanager
from functools import partial

from config import embedded
from config.logging import configure_logging
from config.metrics import prepare_metrics_dir
from config.settings import Settings


def cmd_run(args: argparse.Namespace) -> int:
    """Start embedded services when no URLs are configured, then web, S3, worker, beat and flower;
    restart a child that dies; stop everything on Ctrl-C or SIGTERM."""
    from app.runner import Child, Supervisor

    settings = Settings.from_env()
    env = dict(os.environ)
    children: list[Child] = []
    services = False

    def serves_on(port: int, host=lambda: "127.0.0.1", timeout: float = 30.0):
        return lambda proc: embedded.wait_for_port(port, timeout=timeout, proc=proc, host=host())

    try:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        prepare_metrics_dir(settings, env, clean=True)
        if not settings.redis_url:
            port = embedded.free_port()
            children.append(Child("redis", partial(embedded.redis_command, settings.var_dir, port),
                                  ready=serves_on(port), service=True, quiet=True))
            env["MINIS3_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"minis3: embedded Redis on 127.0.0.1:{port} (data in {settings.var_dir}/redis)", flush=True)
        if not settings.mongo_url:
            port = embedded.free_port()
            children.append(Child("mongodb", partial(embedded.mongo_command, settings.var_dir, port),
                                  ready=serves_on(port), service=True, quiet=True))
            env["MINIS3_MONGO_URL"] = f"mongodb://127.0.0.1:{port}/"
            print(f"minis3: embedded MongoDB stand-in (nx-27017) on 127.0.0.1:{port}", flush=True)
        services = settings.redis_url is None or settings.mongo_url is None
    except Exception as exc:
        print(f"minis3: {exc}", file=sys.stderr)
        return 1
    bindir = os.path.dirname(sys.executable)
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner among JSON lines
    celery = [os.path.join(bindir, "celery"), "-A", "workers.app", *quiet]

    def web_host() -> str:  # where gunicorn really binds: loopback while the store may run open
        from app.serving import listen_host

        return listen_host(Settings.from_env(env), announce=False)

    children.append(Child("web", lambda: [os.path.join(bindir, "gunicorn"), "-c", "python:app.gunicorn_conf",
                                          "app.wsgi:app"], ready=serves_on(settings.port, web_host, 60)))
    if not settings.secret_key:
        from config.secretkey import FILENAME, load_or_create

        load_or_create(settings.var_dir)  # once, here, before several S3 workers look for it
        print(f"minis3: MINIS3_SECRET_KEY is unset: S3 secrets are sealed with the server key in "
              f"{settings.var_dir / FILENAME} (keep it: without it no S3 secret can be read)", flush=True)
    children.append(Child("s3", lambda: [os.path.join(bindir, "gunicorn"), "-c", "python:app.gunicorn_s3_conf",
                                         "app.s3wsgi:app"],
                          ready=serves_on(settings.s3_port, lambda: settings.s3_host, 60)))
    children.append(Child("worker", lambda: [*celery, "worker", "-Q", "ingest,maintenance",
                                             "-c", str(settings.worker_concurrency), "--loglevel", "INFO"]))
    children.append(Child("beat", lambda: [*celery, "beat", "--loglevel", "INFO",
                                           "--schedule", str(settings.var_dir / "celerybeat-schedule")]))
    if not args.no_flower:
        children.append(Child("flower", lambda: [*celery, "flower", "--address=127.0.0.1",
                                                 f"--port={settings.flower_port}"]))

    supervisor = Supervisor(children, env)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    exit_code = 1
    try:
        supervisor.start()
        if services:
            embedded.publish_urls(settings.var_dir, {"redis_url": env["MINIS3_REDIS_URL"],
                                                     "mongo_url": env["MINIS3_MONGO_URL"]})
        if not supervisor.stopping:
            flower = "" if args.no_flower else f" (flower: http://127.0.0.1:{settings.flower_port})"
            print(f"minis3: listening on http://{web_host()}:{settings.port}/api and S3 on "
                  f"http://{settings.s3_host}:{settings.s3_port}{flower}; Ctrl-C stops everything", flush=True)
        exit_code = supervisor.run()
    except Exception as exc:
        print(f"minis3: {exc}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop()
        if services:
            embedded.withdraw_urls(settings.var_dir)
        print("minis3: stopped", flush=True)
    return exit_code


def command_settings(needs: tuple[str, ...] = ("redis_url", "mongo_url")) -> Settings:
    """Settings for an operator command: ``MINIS3_*`` from the environment and, for a service URL
    left unset, the embedded service that ``minis3 run`` published under ``MINIS3_VAR_DIR``."""
    settings = Settings.from_env()
    if not (settings.redis_url and settings.mongo_url):
        found = embedded.published_urls(settings.var_dir)
        settings = settings.with_overrides(redis_url=settings.redis_url or found.get("redis_url"),
                                           mongo_url=settings.mongo_url or found.get("mongo_url"))
    missing = [f"MINIS3_{name.upper()}" for name in needs if not getattr(settings, name)]
    if missing:
        raise SystemExit(f"minis3: set {' and '.join(missing)}, or start `minis3 run` "
                         f"with MINIS3_VAR_DIR={settings.var_dir} first")
    return settings


def _store():
    from workers.wiring import build_store

    return build_store(command_settings(), strict=True)


@contextmanager
def progress_bar(args: argparse.Namespace, what: str, unit: str):
    """A progress callback drawing a bar on stderr, only on a terminal and never with ``--json``."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc=what, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        def update(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        yield update


def cmd_gc(args: argparse.Namespace) -> int:
    store = _store()
    with progress_bar(args, "gc", " chunks") as progress:
        report = store.garbage_collector().collect(dry_run=args.dry_run, progress=progress)
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

    store = _store()
    enqueue = celery_enqueue(store.settings) if args.repair else None
    with progress_bar(args, "fsck", " items") as progress:
        report = store.fsck().run(repair=args.repair, enqueue=enqueue, progress=progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 0 if report.clean else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from workers.celery import make_celery
    from workers.queue import ingest_queue_depth

    store = _store()
    print(json.dumps(store.stats().of_store(ingest_queue_depth(make_celery(store.settings), store.redis)), indent=2))
    return 0


class _Progress:
    """A tqdm bar on a terminal (stderr), nothing otherwise; ``total(n)`` and ``step(n)`` feed it."""

    def __init__(self, desc: str, quiet: bool = False):
        from tqdm import tqdm

        self.bar = tqdm(desc=desc, unit="chunk", disable=quiet or not sys.stderr.isatty(), file=sys.stderr)

    def total(self, n: int) -> None:
        self.bar.total = n
        self.bar.refresh()

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _print_json_or(args: argparse.Namespace, report: dict, lines) -> None:
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for line in lines:
            print(line)


def cmd_heal(args: argparse.Namespace) -> int:
    store = _store()
    bar = _Progress("heal", args.json)
    try:
        report = store.healer().heal_all(full_scan=not args.flagged, progress=bar.step, total=bar.total)
    finally:
        bar.close()
    out = report.to_json()
    lines = [f"{p['status']:8} chunk {p['chunk']}: {p['reason']}" for p in report.problems]
    lines.append(f"heal: {report.chunks_checked} chunk(s) needed a look: {report.healed} healed "
                 f"({report.fragments_rebuilt} fragment(s) rebuilt), {report.fragments_quarantined} quarantined, "
                 f"{report.healthy} already healthy, {report.partial} partly, {report.blocked} blocked, "
                 f"{report.lost} lost")
    _print_json_or(args, out, lines)
    return 0 if not (report.lost or report.blocked or report.partial) else 1


def cmd_scrub(args: argparse.Namespace) -> int:
    store = _store()
    if not args.now:
        status = store.scrubber().status()
        _print_json_or(args, {"scrub": status}, [json.dumps(status, indent=2)])
        return 0
    bar = _Progress("scrub", args.json)
    bar.total(store.meta.chunks.count_chunks())
    try:
        report = store.scrubber().run_slice(budget_s=None, mbps=args.mbps, full=True, progress=bar.step)
    finally:
        bar.close()
    lines = [f"damaged  chunk {d['chunk']}: corrupt fragments {d['corrupt']}, missing {d['missing']} (heal queued)"
             for d in report.damaged]
    lines.append(f"scrub: {report.chunks} chunk(s), {report.fragments} fragment(s), {report.bytes} bytes verified "
                 f"in {report.seconds:.1f}s ({report.mbps} MB/s): {report.corrupt} corrupt, {report.missing} missing")
    _print_json_or(args, report.to_json(), lines)
    return 0 if not (report.corrupt or report.missing) else 1


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_nodes(args: argparse.Namespace) -> int:
    store = _store()
    nodes = store.node_operations()
    action = getattr(args, "nodes_action", None)
    if action == "drain":
        bar = _Progress(f"drain {args.node}", args.json)
        try:
            report = nodes.drain_node(args.node, progress=bar.step, total=bar.total)
        finally:
            bar.close()
        lines = [f"not moved: chunk {e['chunk']} fragment {e['fragment']}: {e['error']}" for e in report.errors]
        lines.append(f"drain {args.node}: {report.moved} fragment(s) moved, {report.failed} failed, "
                     f"{report.remaining} left on the node" + (
                         "; it can be removed from MINIS3_NODES" if report.remaining == 0 else
                         "; run the command again once the cause is fixed"))
        _print_json_or(args, report.to_json(), lines)
        return 0 if report.remaining == 0 else 1
    if action == "undrain":
        store.meta.operations.set_node_draining(args.node, False)
        print(f"node {args.node} takes new fragments again")
        return 0
    rows = nodes.node_table()
    lines = [f"{'NODE':16} {'STATE':9} {'FRAGMENTS':>10} {'BYTES':>11} {'FREE':>11}  PATH"]
    lines += [f"{r['node']:16} {r['state']:9} {r['fragments']:>10} {_size(r['bytes']):>11} "
              f"{_size(r['freeBytes']):>11}  {r['path'] or '-'}" for r in rows]
    _print_json_or(args, {"nodes": rows}, lines)
    return 0


def cmd_rebalance(args: argparse.Namespace) -> int:
    store = _store()
    bar = _Progress("rebalance", args.json)
    try:
        report = store.node_operations().rebalance(progress=bar.step, total=bar.total)
    finally:
        bar.close()
    _print_json_or(args, report.to_json(), [f"rebalance: {report.moved} fragment(s) moved, {report.failed} failed"])
    return 0 if not report.failed else 1


def cmd_ec(args: argparse.Namespace) -> int:
    store = _store()
    if not args.wait:
        from workers.celery import make_celery

        make_celery(store.settings).send_task("minis3.ec_convert")
        print(f"ec convert: queued; whole-copy chunks are re-encoded to {store.settings.ec} in the background "
              f"(progress: `minis3 stats`, ecConvert)")
        return 0
    bar = _Progress("ec convert", args.json)
    try:
        report = store.node_operations().convert_all(progress=bar.step, total=bar.total)
    finally:
        bar.close()
    lines = [f"not converted: chunk {e['chunk']}: {e['error']}" for e in report.errors]
    lines.append(f"ec convert to {report.layout}: {report.converted} of {report.total} chunk(s) converted, "
                 f"{report.failed} failed")
    _print_json_or(args, report.to_json(), lines)
    return 0 if not report.failed else 1


def _add_erasure_commands(sub) -> None:
    p = sub.add_parser("heal", help="rebuild missing or corrupt fragments of every chunk that needs it now")
    p.add_argument("--flagged", action="store_true", help="only chunks flagged by reads and scrub (no node scan)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_heal)
    p = sub.add_parser("scrub", help="the background scrub's progress; --now runs a full verifying pass")
    p.add_argument("--now", action="store_true", help="read and verify every fragment now, queueing heals")
    p.add_argument("--mbps", type=float, default=0.0, help="rate limit of --now in MB/s (default: none)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_scrub)
    p = sub.add_parser("nodes", help="nodes with state, fragments and bytes; drain NAME moves everything off one")
    p.add_argument("--json", action="store_true", help="print as JSON")
    actions = p.add_subparsers(dest="nodes_action")
    d = actions.add_parser("drain", help="move every fragment off a node (resumable) so that it can be removed")
    d.add_argument("node")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    u = actions.add_parser("undrain", help="let a drained node take new fragments again")
    u.add_argument("node")
    p.set_defaults(func=cmd_nodes)
    p = sub.add_parser("rebalance", help="move fragments from the fullest nodes to the emptiest")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_rebalance)
    p = sub.add_parser("ec", help="erasure coding: convert whole-copy chunks into the current MINIS3_EC layout")
    ec = p.add_subparsers(dest="ec_action", required=True)
    c = ec.add_parser("convert", help="re-encode 1+0 chunks in the background (--wait: here, with progress)")
    c.add_argument("--wait", action="store_true", help="convert here and now with a progress bar")
    c.add_argument("--json", action="store_true", help="print the report as JSON (with --wait)")
    p.set_defaults(func=cmd_ec)


def cmd_keys(args: argparse.Namespace) -> int:
    from app.auth import keys_command

    return keys_command(command_settings(needs=("mongo_url",)), args.keys_action, getattr(args, "tenant", None),
                        getattr(args, "key_id", None), s3=getattr(args, "s3", False),
                        admin=getattr(args, "admin", False))


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
    create.add_argument("--admin", action="store_true",
                        help="an operator's key: store-wide /api/stats and /metrics (other keys see their tenant only)")
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
    _add_erasure_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging(os.environ.get("MINIS3_LOG_LEVEL", "WARNING"))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
