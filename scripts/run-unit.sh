#!/bin/sh
# Runs every unit-test binary given as argument (cmocka); prints a closing summary line.
# Exit status is non-zero if any binary failed.
pass=0; fail=0
for t in "$@"; do
  if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAILED: $t"; fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
