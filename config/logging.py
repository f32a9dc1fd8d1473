"""Log format shared by the web, worker and beat processes."""
import logging
import os


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MINIS3_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
