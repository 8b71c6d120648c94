#!/bin/sh
# The sum of the numbers in the JSON array in file $1.
jq 'add' "$1"
