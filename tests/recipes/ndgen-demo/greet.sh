#!/bin/sh
# Greets its argument with the recipe's greeting.
echo "${DEMO_GREETING:-Hello}, ${1:-world}!"
