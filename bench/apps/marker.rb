# The "app code is running" marker, as bench/apps/marker.py sends it, for the Ruby peers:
# one datagram "KIND PID PPID MONOTONIC_NS WORKER_ID" to the unix socket in
# $SVCBENCH_MARKER (a no-op without it). The time is taken first, with CLOCK_MONOTONIC.
require "socket"

module SvcBenchMarker
  def self.emit(kind, worker_id = -1)
    t_ns = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
    path = ENV["SVCBENCH_MARKER"]
    return if path.nil? || path.empty?

    sock = Socket.new(:UNIX, :DGRAM)
    begin
      sock.send("#{kind} #{Process.pid} #{Process.ppid} #{t_ns} #{worker_id}", 0,
                Socket.sockaddr_un(path))
    rescue SystemCallError
      nil # the bench is gone or not listening
    ensure
      sock.close
    end
  end
end
