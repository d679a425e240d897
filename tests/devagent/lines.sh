#!/bin/sh
# Prints "line 1" .. "line $1" on stdout, then one line on stderr.
i=1
while [ "$i" -le "$1" ]; do
  echo "line $i"
  i=$((i + 1))
done
echo "done, on stderr" >&2
