#!/bin/sh
# A child in the background and the leader asleep: stopping the run must stop both.
sleep 60 &
echo "child $!"
echo "leader $$"
sleep 60
