# Sourced by bench/run.sh after the rounds of rows a to c1M (BENCH_PROFILE=0 skips it): where a
# test-key request's time goes, Konnect (row c) beside the minimal h2o server (row h) under the
# same wrk load, one after the other in the same run. For each server:
#   perf stat   CPU time, system calls and context switches per request, over a wrk run
#   /proc       each thread's CPU time over the same run, by thread name (Konnect names its
#               threads: kn-loop-N, kn-store, kn-checkpoint, kn-calls, kn-passwords)
#   wrk         bytes per answer (its transfer rate over its request rate)
#   perf record where the CPU time goes (sampled at 1999 Hz with call graphs over another run),
#               as each function's share of the samples taken in the server
# It uses run.sh's servers, keys and functions, and prints figures only.

# thread_cpu PID: one line per thread, "NAME TICKS" (user + system, in clock ticks).
thread_cpu() {
    local t
    for t in /proc/"$1"/task/*; do
        # comm may hold spaces; stat's fields after the ")" do not.
        printf '%s %s\n' "$(cat "$t/comm" 2>/dev/null | tr ' ' '_')" \
            "$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
    done
}

# profile_server NAME PID URL KEYS: one perf stat run and one perf record run, each under wrk.
profile_server() {
    local name=$1 pid=$2 url=$3 keys=$4 out=$TMP/profile-$1
    note "profile: $name, perf stat ($DURATION)"
    wait_quiet >/dev/null
    perf stat -x, -e task-clock,raw_syscalls:sys_enter,context-switches -p "$pid" \
        -o "$out.stat" -- sleep "${DURATION%s}" &
    local sp=$!
    thread_cpu "$pid" >"$out.threads0"
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA" "$url" -- "$keys" "$NKEYS" \
        >"$out.wrk" 2>&1 || true
    thread_cpu "$pid" >"$out.threads1"
    wait "$sp" || true
    note "profile: $name, perf record ($DURATION)"
    perf record -q -F 1999 -g -p "$pid" -o "$out.data" -- sleep "${DURATION%s}" \
        >/dev/null 2>&1 &
    sp=$!
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA" "$url" -- "$keys" "$NKEYS" \
        >/dev/null 2>&1 || true
    wait "$sp" || true
    perf report -i "$out.data" --stdio --no-children --sort dso --percent-limit 1 -g none \
        2>/dev/null | awk '/^ +[0-9.]+%/ { printf "    %-8s %s\n", $1, $2 }' | head -n 8 >"$out.dso"
    perf report -i "$out.data" --stdio --no-children --sort symbol --percent-limit 1.2 \
        -g none 2>/dev/null | awk '/^ +[0-9.]+%/ { printf "    %-8s %s %s\n", $1, $2, $3 }' |
        head -n 25 >"$out.top"
}

# profile_line NAME: requests/s, CPU us, system calls and context switches per request, bytes
# per answer.
profile_line() {
    local out=$TMP/profile-$1
    awk -F, -v name="$1" -v wrk="$out.wrk" '
        BEGIN {
            while ((getline l < wrk) > 0) {
                split(l, f, " ")
                if (l ~ /requests in/) n = f[1]
                if (l ~ /^Requests\/sec:/) rps = f[2]
                if (l ~ /^Transfer\/sec:/) {
                    t = f[2]; m = 1
                    if (t ~ /KB$/) m = 1024; else if (t ~ /MB$/) m = 1048576; else if (t ~ /GB$/) m = 1073741824
                    bps = (t + 0) * m
                }
            }
        }
        $3 == "task-clock" { cpu_ms = $1 }
        $3 == "raw_syscalls:sys_enter" { sys = $1 }
        $3 == "context-switches" { cs = $1 }
        END {
            if (n == 0) { printf "  %-24s no requests\n", name; exit }
            printf "  %-24s %9.0f %12.2f %12.2f %12.3f %12.0f\n", name, rps, cpu_ms * 1000 / n,
                sys / n, cs / n, (rps > 0 ? bps / rps : 0)
        }' "$out.stat"
}

profile_rows() {
    profile_server h2o_min "$H_PID" "$H_URL" "$KEYS"
    profile_server konnect "$K_PID" "$K_URL" "$KEYS"
    echo
    echo "Profile of a test-key request, Konnect (row c) and the minimal h2o server (row h), one"
    echo "wrk run each under perf stat, then one under perf record (1999 Hz, call graphs):"
    printf '  %-24s %9s %12s %12s %12s %12s\n' "server" "req/s" "CPU us/req" "syscalls/req" \
        "ctx sw/req" "bytes/answer"
    profile_line h2o_min
    profile_line konnect
    echo "  (CPU us/req: the server's task-clock over the requests wrk completed in the same 10 s; it"
    echo "  includes the kernel's share of the server's system calls.)"
    echo "  CPU per thread over the perf stat run, in ms of CPU per second (threads of one name summed):"
    for s in h2o_min konnect; do
        awk -v hz="$(getconf CLK_TCK)" -v secs="${DURATION%s}" -v name="$s" '
            FNR == NR { before[FNR] = $2; next }
            { t[$1] += $2 - before[FNR]; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
            END {
                line = sprintf("    %-8s", name)
                for (i = 1; i <= n; i++)
                    if (t[order[i]] > 0)
                        line = line sprintf(" %s %.0f", order[i], t[order[i]] * 1000 / hz / secs)
                print line
            }' "$TMP/profile-$s.threads0" "$TMP/profile-$s.threads1"
    done
    for s in h2o_min konnect; do
        echo "  where $s's samples fall, by file ([kernel.kallsyms]: the kernel, for the process):"
        cat "$TMP/profile-$s.dso"
        echo "  and by function (at least 1.2 %; [k] kernel, [.] user space):"
        cat "$TMP/profile-$s.top"
    done
}
