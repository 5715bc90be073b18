#!/bin/bash
# A/B: the vs_fio point mode of two builds, interleaved; prints IOPS and CPU/op per run.
set -u
pts=("caio linux block_on|32|/dev/loop0" "caio uring tokio-mt|32|/dev/loop0" "caio linux tokio-ct|8|/dev/loop0" "caio thread|32|/dev/loop0" "caio linux|16|/dev/loop0")
# More points, "system|qd|target" separated by ';' (issue33-cancel adds one).
IFS=';' read -ra more <<< "${MORE_POINTS:-}"
pts+=("${more[@]}")
for r in 1 2 3 4 5; do
  for p in "${pts[@]}"; do
    IFS='|' read -r sys qd tgt <<< "$p"
    if [ $((r % 2)) = 1 ]; then order="base new"; else order="new base"; fi
    for b in $order; do
      out=$(/tmp/vs_fio_$b --point "$sys" --target "$tgt" --len 1073741824 --qd "$qd" --secs 1 --direct 1 --write 0 2>/dev/null | grep '^POINT')
      read -r _ ops secs user sys_s <<< "$out"
      echo "$r|$sys|$qd|$b|$(python3 -c "print(f'{$ops/$secs:.0f}|{($user+$sys_s)/$ops*1e6:.2f}')")"
    done
  done
done
