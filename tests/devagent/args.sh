#!/bin/sh
# Each argument on its own line, then what reached the environment.
for arg in "$@"; do
  echo "arg [$arg]"
done
echo "DEPLOY_ENV=${DEPLOY_ENV:-unset}"
echo "AGENT_SECRET=${AGENT_SECRET:-unset}"
