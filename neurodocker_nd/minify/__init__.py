"""Minify: trace a workload from the host and write a verified, minimal new image.

One module per step, data flowing one way:
source (image → rootfs view + config) → run (bwrap sandbox) → trace / ptrace
(→ record.TraceRecord) → keep (closure → KeepSet) → image (tar stream → docker
import / SquashFS) → verify (rerun + compare) → report.  Importing this package
has no side effects; the Docker SDK is imported inside functions.
"""
