"""svcengine's peer app: a trivial worker that idles without wakeups."""

import marker

import svcengine


class IdleWorker(svcengine.Worker):
    def run(self):
        marker.emit("ready", self.worker_id)
        while not self.stopping:
            self.wait(3600)
