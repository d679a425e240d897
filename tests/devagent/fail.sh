#!/bin/sh
# Thirty lines, then a failure.
i=1
while [ "$i" -le 30 ]; do
  echo "step $i"
  i=$((i + 1))
done
exit 1
