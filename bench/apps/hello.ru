# Unicorn's peer app (bench/run.py, bench/more.py): hello-world Rack, like bench/apps/hello.py;
# x-pid names the worker that answered.
run lambda { |_env|
  [200, { "content-type" => "text/plain", "content-length" => "14", "x-pid" => Process.pid.to_s },
   ["Hello, world!\n"]]
}
