# ServerEngine's peer app (bench/run.py, bench/more.py): process workers serving hello-world
# HTTP on a socket the server (the master) binds before forking, like svcengine's `listen`:
# TCP on 127.0.0.1:$SVCBENCH_PORT, or a unix socket at $SVCBENCH_UNIX.
#   SVCBENCH_PORT=8000 SVCBENCH_WORKERS=4 ruby bench/apps/serverengine_hello.rb
require "serverengine"
require "socket"
require_relative "marker"

module HelloServer
  attr_reader :listener

  def before_run
    path = ENV["SVCBENCH_UNIX"]
    @listener = if path
                  UNIXServer.new(path)
                else
                  TCPServer.new("127.0.0.1", Integer(ENV.fetch("SVCBENCH_PORT")))
                end
  end
end

module HelloWorker
  BODY = "Hello, world!\n".freeze
  HEAD = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: #{BODY.bytesize}\r\n".freeze

  def initialize
    @stop_r, @stop_w = IO.pipe
  end

  def run
    SvcBenchMarker.emit("ready", worker_id)
    @response = "#{HEAD}X-Pid: #{Process.pid}\r\n\r\n#{BODY}".freeze # names the worker
    sock = server.listener
    loop do
      ready, = IO.select([sock, @stop_r])
      break if ready.include?(@stop_r)

      begin
        conn = sock.accept_nonblock
      rescue IO::WaitReadable, Errno::EINTR
        next # another worker took it
      end
      serve(conn)
    end
  end

  def serve(conn)
    while (line = conn.gets) && line != "\r\n"
    end
    conn.write(@response)
  rescue SystemCallError, IOError
    nil
  ensure
    conn.close
  end

  def stop
    @stop_w.write_nonblock("x", exception: false)
  end
end

se = ServerEngine.create(HelloServer, HelloWorker,
                         workers: Integer(ENV.fetch("SVCBENCH_WORKERS", "4")),
                         worker_type: "process",
                         daemonize: false,
                         supervisor: false,
                         log: ENV.fetch("SVCBENCH_LOG", "-"),
                         log_level: "warn")
se.run
