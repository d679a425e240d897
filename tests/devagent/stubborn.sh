#!/bin/sh
# Ignores SIGTERM (and so does its sleep): only the SIGKILL after the grace period ends it.
trap '' TERM
echo "leader $$"
sleep 60
