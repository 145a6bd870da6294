# Unicorn's peer app (bench/more.py): hello-world Rack, like bench/apps/hello.py.
run lambda { |_env|
  [200, { "content-type" => "text/plain", "content-length" => "14" }, ["Hello, world!\n"]]
}
