#!/usr/bin/env bash
# Stage mixbench domain sets on a new machine from the corpus their stores were measured on.
#
# Usage, from the project root (root for apt-get):  bash benchmarks/mixbench/stage_sets.sh [SET ...]
# SET: five, even, skewed or continual (default: skewed five).  About 7 minutes on 2 cores for the two.
#
# The corpus is the README's seven-domain build with --min-total-mb 198.5253: arithmetic, the domain that
# fills the corpus total, then has the size the skewed store's units trained on (the other domains are
# whole or capped, so the total does not change them).  The leaves set needs its own build (README).
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=${MIXBENCH_CORPUS:-/tmp/mixbench-corpus}
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(skewed five)
packages=(python3-doc bible-kjv bible-kjv-text dict-gcide dict-wn manpages-de groff-base)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q " installed$" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if [ ! -f "$corpus/corpus.json" ]; then
  hf-datamix corpus build "$corpus" --min-total-mb 198.5253 \
    --domains python_stdlib,gcide,wordnet,arithmetic,python_docs,scripture,man_de
fi
pids=()
for set in "${sets[@]}"; do  # one process per set: staging is mostly single-threaded
  python3 -m benchmarks.mixbench stage --corpus "$corpus" --set "$set" > "/tmp/mixbench-stage-$set.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "staged ${sets[$i]}: benchmarks/mixbench/data/${sets[$i]} ($(du -sh "benchmarks/mixbench/data/${sets[$i]}" | cut -f1))"
  else
    status=1
    echo "staging ${sets[$i]} failed: see /tmp/mixbench-stage-${sets[$i]}.log" >&2
  fi
done
exit $status
