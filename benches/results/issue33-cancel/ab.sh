#!/bin/bash
# The A/B of ../issue33-counters/ab.sh, with the driving thread's own io_uring ring too.
MORE_POINTS="caio uring block_on|32|/dev/loop0" exec bash "$(dirname "$0")/../issue33-counters/ab.sh"
