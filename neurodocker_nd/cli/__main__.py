"""`python -m neurodocker_nd.cli`, as the tests and bench/ call it."""

from neurodocker_nd.cli import main

main()
