# Unicorn config for bench/more.py: defaults, plus the app-ready marker.
# after_worker_ready runs in the worker once the app is loaded, right before it accepts.
require_relative "marker"

worker_processes Integer(ENV.fetch("SVCBENCH_WORKERS", "4"))
pid ENV["SVCBENCH_PIDFILE"] if ENV["SVCBENCH_PIDFILE"]

after_worker_ready do |_server, worker|
  SvcBenchMarker.emit("ready", worker.nr)
end
