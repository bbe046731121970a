#!/usr/bin/env bash
# benchmarks/gpu_check.sh detached from the device command (setsid), so that one run can outlive
# a command's 10-minute cap on a machine kept warm by a second command: the first call starts it
# and waits up to WAIT_S seconds; a later call while it runs only waits. Each call copies what the
# run has written so far to $OUT (the partial JSONs gpu_peers.py writes after its cheap rows).
# Environment: what gpu_check.sh takes (STEPS, PEERS_*), WAIT_S.
set -u
RUN=/tmp/sdopt-detached
if [ ! -e "$RUN/pid" ]; then
  mkdir -p "$RUN/out"
  OUT="$RUN/out" setsid nohup bash benchmarks/gpu_check.sh > "$RUN/log" 2>&1 < /dev/null &
  echo $! > "$RUN/pid"
fi
start=$SECONDS
while kill -0 "$(cat "$RUN/pid")" 2>/dev/null && (( SECONDS - start < ${WAIT_S:-560} )); do
  sleep 2
done
kill -0 "$(cat "$RUN/pid")" 2>/dev/null && echo "still running after ${WAIT_S:-560} s" \
  || echo "finished"
cp -r "$RUN/out/." "$OUT/"
cp "$RUN/log" "$OUT/detached.log"
grep -v -E "Warning|warn\(" "$RUN/log" | tail -45
