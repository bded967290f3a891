#!/usr/bin/env bash
# netlab.sh — a NAT lab in network namespaces (iproute2 + nftables, run as root).
#
#   netlab.sh up PREFIX SITE:TYPE[:CLIENTS]...   build the lab; prints what it built (see below)
#   netlab.sh down PREFIX                        kill what runs in the lab, delete its namespaces
#   netlab.sh rebind PREFIX SITE                 move the site's NAT to a new port range, drop its mappings
#   netlab.sh coordonly PREFIX SITE on|off       on: the site's router passes UDP to and from the coord only
#   netlab.sh exec PREFIX NS CMD...              run CMD in namespace PREFIX-NS (e.g. coord, a-1, a-nat)
#   netlab.sh miniupnpd PREFIX SITE DIR [MODE]   run miniupnpd (foreground) on an upnp site's router;
#                                                MODE pcp (NAT-PMP and PCP, the default), upnp (UPnP
#                                                IGD only) or all
#   netlab.sh list PREFIX                        the lab's namespaces
#
# Every namespace is named PREFIX-something, so runs with different prefixes never collide and `down`
# removes exactly one lab. Nothing outside the lab's namespaces changes: links are created inside
# them (ip -n), and addresses are documentation ranges (RFC 5737) and private LANs.
#
# Layout:
#   PREFIX-inet       the "internet": bridge br0, 203.0.113.0/24, no addresses of its own
#   PREFIX-coord      203.0.113.2 and 203.0.113.3 (two addresses, for NAT mapping discovery)
#   PREFIX-SITE-nat   site number N (1, 2, … in argument order): WAN "wan" 203.0.113.(10+N)
#                     (11.0.113.(10+N) for an upnp router: see UPNET),
#                     LAN bridge "lan" 10.N.0.1/24; absent for public sites
#   PREFIX-SITE-K     client K (1, 2, …): 10.N.0.(1+K)/24, default route via 10.N.0.1;
#                     a public site's only client sits on the internet as 203.0.113.(10+N)
# Hosts on the internet segment reach 203.0.113.0/24 and 11.0.113.0/24 and nothing else (blackhole
# default route), as private addresses are unreachable across the real internet.
#
# Router TYPEs (UDP behaviour; TCP and ICMP are masqueraded and stateful everywhere):
#   public     no router: the client is on the internet segment
#   fullcone   endpoint-independent mapping and filtering: once the client has sent from a port,
#              anyone may send to its public port
#   addr       endpoint-independent mapping, address-restricted filtering: inbound to the public port
#              from any port of an address the client has sent to
#   port       endpoint-independent mapping, port-restricted filtering (plain conntrack masquerade,
#              the common home router)
#   symmetric  endpoint-dependent mapping (masquerade random: a new public port per destination),
#              port-restricted filtering
#   sequential endpoint-dependent mapping with a predictable allocator: every new UDP mapping takes
#              the next port of one counter shared by all clients (30000, 30001, … 39999, then
#              30000 again), as many carrier-grade and corporate NATs do; port-restricted filtering
#   upnp       symmetric (masquerade random), plus the hooks miniupnpd fills (table inet miniupnpd);
#              `netlab.sh miniupnpd` runs it (NAT-PMP and PCP on the LAN side, or UPnP IGD, or all
#              three), so a client can map a public port to itself
#   blocked    UDP dropped in both directions (port-restricted for the rest)
#   udpblock   the same: every UDP packet dropped silently (nodes fall back to TCP)
#   udpreject  UDP refused with ICMP port unreachable instead of dropped
#   proxyonly  nothing forwarded at all: the clients reach only the router itself (10.N.0.1), where
#              an HTTP CONNECT proxy (run by whoever uses the lab) is their only way out
# Every router drops new inbound connections to itself on the WAN side (as real routers do): a probe
# that arrives before the client sent anything must not leave a conntrack entry behind, or the router
# remaps the client's port when it does send.
#
# coordonly models a firewall that lets the clients reach the coord but no other internet host over UDP
# (so peers must use the relay), and then opens up: existing mappings stay, only forwarding stops.
#
# Mapping is port-preserving until the first rebind (sequential routers excepted); rebind number R
# (1, 2, …) maps UDP into 20000+1000*((R-1)%10) … +999 (below Linux's ephemeral range, so a client's
# own port is never kept; a sequential router counts through that range instead) and switches the
# router to a fresh conntrack zone, which drops every mapping at once, as a router reboot or a new
# DHCP lease upstream would.
#
# There is no "port-preserving endpoint-dependent" type: Linux keeps the client's port for every
# destination whenever it can (a different destination never clashes), which is the plain `port`
# router, and which NAT discovery rightly measures as endpoint-independent.
#
# `up` prints one line per namespace, fields separated by spaces:
#   coord NS ADDR ADDR
#   site NAME TYPE ROUTER-NS|- PUBLIC-ADDR
#   client NAME K NS ADDR
# On any failure `up` removes what it built. NETLAB_FAIL_AFTER_SITE=N makes `up` fail on purpose
# after building N sites (for the tests of that cleanup).
set -euo pipefail

NET=203.0.113
# upnp routers' WAN prefix, also on the internet segment: miniupnpd (2.3.1) refuses to map ports on a
# reserved external address, the documentation ranges included, so it cannot be 203.0.113.0/24. It
# is a global prefix, but nothing of the lab reaches beyond its namespaces.
UPNET=11.0.113
COORD_ADDRS=("$NET.2" "$NET.3")
TYPES="public fullcone addr port symmetric sequential upnp blocked udpblock udpreject proxyonly"

die() {
  echo "netlab: $*" >&2
  exit 1
}

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

check_prefix() {
  [[ $1 =~ ^[a-z][a-z0-9]{1,15}$ ]] || die "prefix '$1': want 2-16 of [a-z0-9], starting with a letter"
}

# lab_namespaces PREFIX: the namespaces of one lab (exact prefix and dash, never a longer prefix).
lab_namespaces() {
  ip netns list | awk -v p="$1-" 'index($1, p) == 1 { print $1 }'
}

ipn() { # ipn NS ARGS...: ip in a namespace, quiet on success
  ip -n "$@"
}

in_ns() { # in_ns NS CMD...
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

new_ns() {
  ip netns add "$1"
  ipn "$1" link set lo up
  in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# internet_host NS IFNAME ADDR...: attach NS to the internet bridge through a veth named IFNAME there.
internet_host() {
  local ns=$1 port=$2
  shift 2
  ipn "$P-inet" link add "$port" type veth peer name wan netns "$ns"
  ipn "$P-inet" link set "$port" master br0 up
  local a
  for a in "$@"; do
    ipn "$ns" addr add "$a/24" dev wan
  done
  ipn "$ns" link set wan up
  ipn "$ns" route add blackhole default
  # Both internet prefixes are on the segment: a route to the one the host has no address in.
  local pfx
  for pfx in "$NET" "$UPNET"; do
    [[ " $* " == *" $pfx."* ]] || ipn "$ns" route add "$pfx.0/24" dev wan
  done
}

# seq_snat ADDR LO N: the statement of a sequential allocator: each new mapping takes the next of the
# N ports LO … LO+N-1 on ADDR. (A counter, numgen inc, with a map to ports: numgen's "offset" puts its
# value into the port in host byte order with nft 1.0.6, which counts in steps of 256.)
seq_snat() {
  local i
  printf 'snat ip to %s : numgen inc mod %d map { ' "$1" "$3"
  for ((i = 0; i < $3; i++)); do
    printf '%d : %d, ' "$i" "$(($2 + i))"
  done
  printf '}'
}

# router_rules TYPE WAN-ADDR: the nftables ruleset of a router of that type.
router_rules() {
  local type=$1 wan=$2
  cat <<EOF
table ip netlab {
  # Everything the router tracks lives in one conntrack zone; rebind switches to a fresh one.
  chain raw_pre { type filter hook prerouting priority raw; policy accept; ct zone set 1; }
  chain raw_out { type filter hook output priority raw; policy accept; ct zone set 1; }
  # Public UDP port -> client address and port, learnt from outbound packets after translation.
  map pub { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 180s; }
  # (remote address, public UDP port) pairs the client has sent to: address-restricted filtering.
  set contacted { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 180s; }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" icmp type echo-request accept
    iifname "wan" drop
  }
  chain coordonly {
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump coordonly
$( case $type in
  blocked | udpblock) echo '    meta l4proto udp drop' ;;
  udpreject) echo '    meta l4proto udp reject' ;;
  proxyonly) echo '    iifname "lan" drop' ;;
esac )
    iifname "wan" ct state established,related accept
    iifname "wan" ct status dnat accept
    iifname "wan" drop
  }
  chain nat_in {
    type nat hook prerouting priority dstnat; policy accept;
$( case $type in
  fullcone) echo '    iifname "wan" udp dport @pub dnat ip to udp dport map @pub' ;;
  addr) echo '    iifname "wan" ip saddr . udp dport @contacted dnat ip to udp dport map @pub' ;;
esac )
  }
  chain nat_out {
    type nat hook postrouting priority srcnat; policy accept;
$( [ "$type" = sequential ] && echo "    oifname \"wan\" meta l4proto udp $(seq_snat "$wan" 30000 10000)" )
    oifname "wan" masquerade$( [ "$type" = symmetric ] || [ "$type" = upnp ] && echo ' random' )
  }
  chain note_out {
    type filter hook postrouting priority srcnat + 1; policy accept;
$( case $type in
  fullcone | addr) echo '    oifname "wan" update @pub { udp sport : ct original ip saddr . ct original proto-src }' ;;
esac
  [ "$type" = addr ] && echo '    oifname "wan" update @contacted { ip daddr . udp sport }' )
  }
}
$( [ "$type" = upnp ] && upnp_rules )
EOF
}

# upnp_rules: the hooks miniupnpd (nftables backend) fills on an upnp router, in a table of its own;
# cmd_miniupnpd's config names them. A MAP adds a DNAT in prerouting_miniupnpd and an accept in
# miniupnpd (the forward hook); postrouting_miniupnpd (PCP PEER only) stays empty, so a client's own
# outbound packets still leave from random ports, the mapped port only answers what came in on it.
upnp_rules() {
  cat <<EOF
table inet miniupnpd {
  chain forward { type filter hook forward priority filter - 1; policy accept; jump miniupnpd; }
  chain miniupnpd {
  }
  chain prerouting { type nat hook prerouting priority dstnat - 1; policy accept; jump prerouting_miniupnpd; }
  chain prerouting_miniupnpd {
  }
  chain postrouting { type nat hook postrouting priority srcnat - 1; policy accept; jump postrouting_miniupnpd; }
  chain postrouting_miniupnpd {
  }
}
EOF
}

cmd_up() {
  [ $# -ge 1 ] || usage
  P=$1
  shift
  check_prefix "$P"
  [ -z "$(lab_namespaces "$P")" ] || die "a lab with prefix $P exists already (netlab.sh down $P)"
  local spec name type count seen=" "
  for spec in "$@"; do
    IFS=: read -r name type count <<<"$spec"
    [[ $name =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "site '$name': want 1-10 of [a-z0-9], starting with a letter"
    [[ $name != coord && $name != inet ]] || die "site name '$name' is reserved"
    [[ " $TYPES " == *" ${type:-?} "* ]] || die "site $name: type '$type' is none of: $TYPES"
    [[ ${count:-1} =~ ^[1-9]$ ]] || die "site $name: want 1-9 clients, not '$count'"
    [[ $type != public || ${count:-1} == 1 ]] || die "site $name: a public site has one client"
    [[ $seen != *" $name "* ]] || die "site $name given twice"
    seen+="$name "
  done
  [ $# -le 200 ] || die "at most 200 sites"

  # From here on, a failure anywhere removes everything built so far.
  trap 'status=$?; trap - EXIT; [ $status -eq 0 ] || { echo "netlab: up failed, removing $P" >&2; cmd_down "$P" >/dev/null 2>&1 || true; }; exit $status' EXIT
  trap 'exit 130' INT TERM

  new_ns "$P-inet"
  ipn "$P-inet" link add br0 type bridge
  ipn "$P-inet" link set br0 up
  new_ns "$P-coord"
  internet_host "$P-coord" coord "${COORD_ADDRS[@]}"
  echo "coord $P-coord ${COORD_ADDRS[*]}"

  local n=0 k router wan client lanaddr
  for spec in "$@"; do
    IFS=: read -r name type count <<<"$spec"
    count=${count:-1}
    n=$((n + 1))
    wan="$NET.$((10 + n))"
    [ "$type" != upnp ] || wan="$UPNET.$((10 + n))"
    if [ "$type" = public ]; then
      client="$P-$name-1"
      new_ns "$client"
      internet_host "$client" "s$n" "$wan"
      echo "site $name $type - $wan"
      echo "client $name 1 $client $wan"
    else
      router="$P-$name-nat"
      new_ns "$router"
      internet_host "$router" "s$n" "$wan"
      in_ns "$router" sysctl -qw net.ipv4.ip_forward=1
      ipn "$router" link add lan type bridge
      ipn "$router" addr add "10.$n.0.1/24" dev lan
      ipn "$router" link set lan up
      router_rules "$type" "$wan" | in_ns "$router" nft -f -
      echo "site $name $type $router $wan"
      for ((k = 1; k <= count; k++)); do
        client="$P-$name-$k"
        lanaddr="10.$n.0.$((1 + k))"
        new_ns "$client"
        ipn "$router" link add "c$k" type veth peer name eth0 netns "$client"
        ipn "$router" link set "c$k" master lan up
        ipn "$client" addr add "$lanaddr/24" dev eth0
        ipn "$client" link set eth0 up
        ipn "$client" route add default via "10.$n.0.1"
        echo "client $name $k $client $lanaddr"
      done
    fi
    if [ "${NETLAB_FAIL_AFTER_SITE:-0}" = "$n" ]; then
      die "failing on purpose after site $n (NETLAB_FAIL_AFTER_SITE)"
    fi
  done
  trap - EXIT INT TERM
}

cmd_down() {
  [ $# -eq 1 ] || usage
  check_prefix "$1"
  local ns pids left
  # Processes still running in the lab (started there by whoever used it): TERM, then KILL.
  for sig in TERM KILL; do
    pids=""
    for ns in $(lab_namespaces "$1"); do
      pids+=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
    done
    [ -n "${pids// /}" ] || break
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    for _ in $(seq 20); do # up to 2 s for them to go
      left=""
      for pid in $pids; do
        [ -d "/proc/$pid" ] && left=1
      done
      [ -n "$left" ] || break
      sleep 0.1
    done
  done
  # Deleting a namespace deletes its links; veth peers in other namespaces go with them.
  for ns in $(lab_namespaces "$1"); do
    ip netns del "$ns" || true
  done
  left=$(lab_namespaces "$1")
  [ -z "$left" ] || die "could not delete: $left"
}

cmd_rebind() {
  [ $# -eq 2 ] || usage
  check_prefix "$1"
  local router="$1-$2-nat" rules zone r lo random="" udp seq
  [ -e "/var/run/netns/$router" ] || die "no NAT router $router (a public site has none)"
  rules=$(in_ns "$router" nft list table ip netlab)
  zone=$(sed -n 's/.*ct zone set \([0-9]*\).*/\1/p' <<<"$rules" | head -1)
  [ -n "$zone" ] || die "$router: no conntrack zone in its ruleset"
  r=$zone # zone 1 before the first rebind; rebind R switches to zone R+1
  lo=$((20000 + 1000 * ((r - 1) % 10)))
  grep -q 'masquerade.*random' <<<"$rules" && random=" random"
  # A sequential router keeps counting, in the new range; the others masquerade into it.
  udp="masquerade to :$lo-$((lo + 999))$random"
  seq=$(sed -n 's/.*snat \(ip \)\{0,1\}to \([0-9.]*\):numgen.*/\2/p' <<<"$rules" | head -1)
  [ -z "$seq" ] || udp=$(seq_snat "$seq" "$lo" 1000)
  in_ns "$router" nft -f - <<EOF
flush chain ip netlab nat_out
add rule ip netlab nat_out oifname "wan" meta l4proto udp $udp
add rule ip netlab nat_out oifname "wan" masquerade$random
flush chain ip netlab raw_pre
add rule ip netlab raw_pre ct zone set $((zone + 1))
flush chain ip netlab raw_out
add rule ip netlab raw_out ct zone set $((zone + 1))
flush map ip netlab pub
flush set ip netlab contacted
EOF
  echo "rebound $2: UDP mapped into $lo-$((lo + 999)), conntrack zone $((zone + 1))"
}

cmd_coordonly() {
  [ $# -eq 3 ] || usage
  check_prefix "$1"
  local router="$1-$2-nat" coord
  [ -e "/var/run/netns/$router" ] || die "no NAT router $router (a public site has none)"
  coord=$(IFS=,; echo "${COORD_ADDRS[*]}")
  case $3 in
  on)
    in_ns "$router" nft -f - <<EOF
flush chain ip netlab coordonly
add rule ip netlab coordonly oifname "wan" meta l4proto udp ip daddr != { $coord } drop
add rule ip netlab coordonly iifname "wan" meta l4proto udp ip saddr != { $coord } drop
EOF
    ;;
  off) in_ns "$router" nft flush chain ip netlab coordonly ;;
  *) usage ;;
  esac
  echo "coordonly $2: $3"
}

# cmd_miniupnpd PREFIX SITE DIR [MODE]: run miniupnpd in the foreground in an upnp site's router, on
# the LAN side: NAT-PMP and PCP (MODE pcp, the default), UPnP IGD alone (upnp: SSDP on 1900, the
# description and SOAP control on HTTP port 5000) or all three (all); rules in the hooks upnp_rules
# made; config, pid and lease files in DIR. It stops on TERM (or `down`), removing its rules.
cmd_miniupnpd() {
  [ $# -eq 3 ] || [ $# -eq 4 ] || usage
  check_prefix "$1"
  local router="$1-$2-nat" dir=$3 mode=${4:-pcp} bin natpmp=yes upnp=no
  case $mode in
  pcp) ;;
  upnp) natpmp=no upnp=yes ;;
  all) upnp=yes ;;
  *) die "miniupnpd mode '$mode': want pcp, upnp or all" ;;
  esac
  [ -e "/var/run/netns/$router" ] || die "no NAT router $router"
  in_ns "$router" nft list table inet miniupnpd >/dev/null 2>&1 || die "$router is no upnp router"
  bin=$(command -v miniupnpd || echo /usr/sbin/miniupnpd)
  [ -x "$bin" ] || die "needs miniupnpd (apt-get install miniupnpd-nftables)"
  [ -d "$dir" ] || die "no directory $dir"
  cat >"$dir/miniupnpd.conf" <<EOF
ext_ifname=wan
listening_ip=lan
enable_natpmp=$natpmp
enable_upnp=$upnp
http_port=5000
system_uptime=no
secure_mode=yes
lease_file=$dir/leases
clean_ruleset_interval=0
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
uuid=00000000-0000-4000-8000-$(printf '%012x' "$RANDOM$RANDOM")
allow 1024-65535 10.0.0.0/8 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
  exec ip netns exec "$router" "$bin" -d -f "$dir/miniupnpd.conf" -P "$dir/miniupnpd.pid"
}

cmd_exec() {
  [ $# -ge 3 ] || usage
  check_prefix "$1"
  local ns="$1-$2"
  shift 2
  [ -e "/var/run/netns/$ns" ] || die "no namespace $ns"
  exec ip netns exec "$ns" "$@"
}

[ $# -ge 1 ] || usage
command -v ip >/dev/null || die "needs ip (iproute2)"
command -v nft >/dev/null || die "needs nft (nftables)"
[ "$(id -u)" = 0 ] || die "needs root (creates network namespaces)"
sub=$1
shift
case $sub in
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
rebind) cmd_rebind "$@" ;;
coordonly) cmd_coordonly "$@" ;;
exec) cmd_exec "$@" ;;
miniupnpd) cmd_miniupnpd "$@" ;;
list)
  [ $# -eq 1 ] || usage
  check_prefix "$1"
  lab_namespaces "$1"
  ;;
*) usage ;;
esac
