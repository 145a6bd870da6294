"""What two processes, or two versions of svcengine, must agree on. Standard library only.

An old master execs the *new* code on disk after a package upgrade (USR2, and spawn workers),
so the names and shapes here cross versions: change one only with its version field.
"""
