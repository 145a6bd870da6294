"""What bench/run.py and bench/more.py share: the machine, the Ruby peers' commands.

Standard library only, like the rest of bench/.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"
RUBY_HINT = "apt-get install ruby-serverengine unicorn"


def machine() -> dict[str, str]:
    """CPU, memory, kernel and OS, for the report's header."""
    found = {"cpu": "?", "memory": "?", "os": "?"}
    wanted = (
        ("/proc/cpuinfo", "model name", "cpu", lambda v: v.split(":", 1)[1].strip()),
        ("/proc/meminfo", "MemTotal", "memory", lambda v: f"{int(v.split()[1]) // 1024} MiB"),
        ("/etc/os-release", "PRETTY_NAME=", "os", lambda v: v.split("=", 1)[1].strip().strip('"')),
    )
    for path, prefix, key, parse in wanted:
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    found[key] = parse(line)
                    break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        **found,
        "kernel": platform.release(),
    }


def byte_compile(python: Path, *dirs: Path) -> None:
    """Compile the peers' Python apps (and a svcengine snapshot) ahead, as pip compiles what
    it installs: under PYTHONDONTWRITEBYTECODE=1 every worker would compile them again."""
    subprocess.run([str(python), "-m", "compileall", "-q", *map(str, dirs)], check=True)


def ruby_missing() -> str:
    """Why the Ruby peers (Debian's ruby-serverengine, unicorn) can't run; "" when they can."""
    ruby = shutil.which("ruby")
    if not ruby:
        return "no `ruby` command"
    r = subprocess.run(
        [ruby, "-e", 'require "serverengine"'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    if r.returncode:
        return "`ruby -e 'require \"serverengine\"'` fails"
    if not shutil.which("unicorn"):
        return "no `unicorn` command"
    return ""


def ruby_versions() -> dict[str, str]:
    r = subprocess.run(
        [
            shutil.which("ruby") or "ruby",
            "-e",
            'require "serverengine"; require "unicorn"; '
            'print RUBY_VERSION, " ", ServerEngine::VERSION, " ", Unicorn::Const::UNICORN_VERSION',
        ],
        capture_output=True,
        text=True,
    )
    parts = r.stdout.split()
    if len(parts) != 3:
        return {}
    return {"ruby": parts[0], "serverengine": parts[1], "unicorn": parts[2]}


def serverengine_argv() -> list[str]:
    """bench/apps/serverengine_hello.rb; SVCBENCH_PORT or SVCBENCH_UNIX picks the socket."""
    return [shutil.which("ruby") or "ruby", str(APPS / "serverengine_hello.rb")]


def unicorn_argv(listen: str) -> list[str]:
    """Unicorn on ``listen`` (host:port, or a path for a unix socket); SVCBENCH_WORKERS sets
    the pool size."""
    return [
        shutil.which("unicorn") or "unicorn",
        "-E",
        "none",  # no development middleware (request logging, lint)
        "-c",
        str(APPS / "unicorn_conf.rb"),
        "-l",
        listen,
        str(APPS / "hello.ru"),
    ]
