"""`python -m neurodocker_nd` runs the ndgen command line."""

from neurodocker_nd.cli import main

main()
