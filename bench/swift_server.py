"""Run one OpenStack Swift server whose swift.conf lives in a directory of the benchmark's own.

Swift's servers read ``/etc/swift/swift.conf`` (hash prefix and suffix, storage policies,
constraints) before they read their own config; the ``swift_dir`` of a server's config only
moves its rings. This point of entry moves swift.conf too, so that a benchmark never writes
under ``/etc/swift``. It runs under the interpreter that has Swift (Debian: /usr/bin/python3):

    /usr/bin/python3 bench/swift_server.py ETC_DIR proxy|account|container|object
"""
import sys

from swift.common import constraints, storage_policy, utils


def main(etc: str, kind: str) -> int:
    utils.set_swift_dir(etc)
    storage_policy.reload_storage_policies()
    constraints.reload_constraints()
    from swift.common.wsgi import run_wsgi  # after the policies: it binds them as it loads the app

    options = {"verbose": True}
    if kind == "object":
        from swift.obj.server import global_conf_callback  # as /usr/bin/swift-object-server passes it
        options["global_conf_callback"] = global_conf_callback
    return run_wsgi(f"{etc}/{kind}-server.conf", f"{kind}-server", **options)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
