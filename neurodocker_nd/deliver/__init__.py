"""Images to HPC: SIF files, and modules (Lmod/Tcl wrappers, shpc entries) from an image's deploy commands."""
