"""Minify: trace a workload from the host and write a verified, minimal new image.

One module per step, data flowing one way:
source (image → rootfs view + config) → sandbox (each command under runc as
root, bubblewrap unprivileged) watched by fanotify or ptrace (→ model.TraceRecord)
→ keep (closure → KeepSet) → write (tar stream → docker import / SquashFS) →
verify (rerun + compare) → report; pipeline sequences them.  The types several
steps share live in model.  Importing this package has no side effects; the
Docker SDK is imported inside functions.
"""
