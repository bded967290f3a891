#!/bin/bash
# coordload.sh BIN sqlite|pg NODES OUTDIR [PHASE]
#
# The control-plane load runs of BENCHMARKS.md ("Control plane under load"): starts one coord on
# SQLite, or two coords sharing one throwaway PostgreSQL (run as nobody on 127.0.0.1:55432, fsync
# on, coords sharing one identity key), runs `BIN loadtest` against them and writes the JSON result,
# the load average every 10 s and, with PHASE (login, joined, fanout or churn) and BIN built with
# `go build -tags pprof ./cmd/warren-coord`, each coord's CPU profile of that phase and its heap and
# goroutines after it, into OUTDIR. Run as root (PostgreSQL runs as nobody). EXTRA adds loadtest
# flags (e.g. EXTRA="--timeout 300s"); COORDENV sets environment variables for the SQLite coord
# only (e.g. COORDENV=GOMEMLIMIT=900MiB).
set -u
BIN=$1; BACKEND=$2; N=$3; OUT=$4; PHASE=${5:-none}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
while ss -lun | grep -q ':750[12] '; do echo "waiting for ports 7501/7502"; sleep 2; done
rm -rf "$OUT"; mkdir -p "$OUT"
W=$(mktemp -d); PIDS=(); PGDATA_=
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	[ -n "$PGDATA_" ] && runuser -u nobody -- "$PGBIN/pg_ctl" -D "$PGDATA_" -m fast stop >/dev/null 2>&1
	rm -rf "$W"
}
trap cleanup EXIT
udperr() { awk '/^Udp:/{n++; if(n==2)print $6}' /proc/net/snmp; }
echo "start $(date -u +%FT%TZ) $(uptime) rcvbuferrors $(udperr)" > "$OUT/uptime"
( while sleep 10; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done >> "$OUT/load" ) & PIDS+=($!)
if [ "$BACKEND" = sqlite ]; then
	env ${COORDENV:-} WARREN_PPROF=127.0.0.1:6061 "$BIN" --data "$W/a" --listen 127.0.0.1:7501 --listen-tcp off --log-level warn 2>"$OUT/coord-a.log" & PIDS+=($!)
	COORDS=127.0.0.1:7501; PP=(6061)
else
	PGDATA_=$W/pg; mkdir -p "$PGDATA_"; chown nobody "$W" "$PGDATA_"
	runuser -u nobody -- "$PGBIN/initdb" -D "$PGDATA_" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
	runuser -u nobody -- "$PGBIN/pg_ctl" -D "$PGDATA_" -l "$PGDATA_/log" -o "-p 55432 -h 127.0.0.1 -c unix_socket_directories= -c max_connections=200" -w start >/dev/null
	"$PGBIN/psql" -h 127.0.0.1 -p 55432 -U postgres -c 'CREATE DATABASE warren' >/dev/null
	DB="postgres://postgres@127.0.0.1:55432/warren?sslmode=disable"
	mkdir -p "$W/a" "$W/b"
	"$BIN" --data "$W/a" --listen 127.0.0.1:7501 --db "$DB" --coord-id a --listen-tcp off --log-level off >/dev/null 2>&1 & p=$!
	sleep 2; kill $p; wait $p 2>/dev/null
	cp "$W/a/key.pem" "$W/b/key.pem" # one identity for both
	WARREN_PPROF=127.0.0.1:6061 "$BIN" --data "$W/a" --listen 127.0.0.1:7501 --db "$DB" --coord-id a --listen-tcp off --log-level warn 2>"$OUT/coord-a.log" & PIDS+=($!)
	WARREN_PPROF=127.0.0.1:6062 "$BIN" --data "$W/b" --listen 127.0.0.1:7502 --db "$DB" --coord-id b --listen-tcp off --log-level warn 2>"$OUT/coord-b.log" & PIDS+=($!)
	COORDS=127.0.0.1:7501,127.0.0.1:7502; PP=(6061 6062)
fi
sleep 2
CMD="$BIN loadtest --coord $COORDS --nodes $N --networks-of 10 --events 500 --event-rate 50 --churn 50 --churn-for 10s${EXTRA:+ $EXTRA}"
echo "$CMD" > "$OUT/cmd"
$CMD > "$OUT/result.json" 2> "$OUT/loadtest.log" & LT=$!
profile() { # $1: the loadtest's log line that starts the phase; $2: name; $3: seconds
	while ! grep -q "$1" "$OUT/loadtest.log"; do sleep 0.2; kill -0 $LT 2>/dev/null || return; done
	echo "$2 $(uptime)" >> "$OUT/uptime"
	local cp=()
	for p in "${PP[@]}"; do curl -s -o "$OUT/cpu-$2-$p.pprof" "http://127.0.0.1:$p/debug/pprof/profile?seconds=$3" & cp+=($!); done
	wait "${cp[@]}"
	for p in "${PP[@]}"; do
		curl -s -o "$OUT/heap-$2-$p.txt" "http://127.0.0.1:$p/debug/pprof/heap?debug=1"
		curl -s -o "$OUT/heap-$2-$p.pprof" "http://127.0.0.1:$p/debug/pprof/heap"
		curl -s -o "$OUT/goroutine-$2-$p.txt" "http://127.0.0.1:$p/debug/pprof/goroutine?debug=1"
	done
}
case $PHASE in
login) profile "logging in" login 20 ;;
joined) profile "networks joined" joined 1 ;;
fanout) profile "timing fan-out" fanout 10 ;;
churn) profile "churning" churn 6 ;;
esac
wait $LT
echo "end $(date -u +%FT%TZ) $(uptime) rcvbuferrors $(udperr)" >> "$OUT/uptime"
cat "$OUT/result.json"
