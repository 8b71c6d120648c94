"""Images on the engine: base images, builds, the Apptainer stand-in, test suites.

base_image (debootstrap → docker import), docker_build (a rendered recipe → image +
per-package tests), apptainer (a .def's sections run on Docker), suite (fulltest.yaml →
SuitePlan), testrun (a SuitePlan run in an image, the deploy check, JUnit).
"""
