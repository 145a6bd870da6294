"""Test workers, installed INSIDE the box and found through the config's python_path."""

import os

import svcengine


class Marker(svcengine.Worker):
    """Logs markers the tests look for in the journal: one info and one warning line at start,
    one line when run() returns after a graceful stop."""

    def run(self):
        self.logger.info("info-marker worker %d pid %d", self.worker_id, os.getpid())
        self.logger.warning("warn-marker worker %d pid %d", self.worker_id, os.getpid())
        while not self.stopping:
            self.wait(5)
        self.logger.warning("graceful-exit-marker worker %d pid %d", self.worker_id, os.getpid())
