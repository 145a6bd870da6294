"""The demo worker: what ServerEngine's README example does, for `./dev run`."""

from __future__ import annotations

from .worker import Worker


class Demo(Worker):
    interval = 3.0

    def run(self) -> None:
        while not self.stopping:
            self.logger.info("[worker_id: %d] Awesome work!", self.worker_id)
            self.wait(self.interval)
        self.logger.info("[worker_id: %d] stopping", self.worker_id)
