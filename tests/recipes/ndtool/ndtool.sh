#!/bin/sh
# The banner, then how many top-level keys the JSON file $1 has.
cat "$NDTOOL_HOME/banner"
jq 'keys | length' "$1"
