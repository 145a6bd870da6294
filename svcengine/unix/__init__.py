"""The operating system, behind small adapters: the only place system calls live.

svcengine runs on Linux only (pyproject's classifiers and the README say so): linux.py holds
the calls other kernels lack (prctl, pidfd, signalfd, SO_PEERCRED's layout, struct flock's
layout, memfd, pipe2), each decided once at import, with a HAS_* flag or a fallback where one
exists. The other modules are the service's OS-facing parts: pidfile, listening sockets, the
daemon launcher, privileges, the process title, logging, the systemd notify socket.
"""
