package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

func cmdStatus(args []string) error {
	fs := newFlagSet("status [--json]", "status [--json]")
	state := stateFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 {
		return fmt.Errorf("status: unexpected argument %q", pos[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := localapi.NewClient(*state).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(st)
	}
	coord := "disconnected (tunnels stay up; reconnecting)"
	if st.Coord.Connected {
		coord = "connected"
		if st.Coord.Transport != "" {
			coord += " over " + st.Coord.Transport
		}
	} else if st.Coord.Trouble != "" {
		coord = "not logged in, retrying: " + st.Coord.Trouble
	}
	fmt.Printf("node      %s  %s\n", st.Self.Name, joinAddrs(st.Self.IPs))
	fmt.Printf("networks  %s\n", orNone(strings.Join(st.Self.Networks, ", ")))
	if len(st.Coord.Servers) > 1 {
		coord += fmt.Sprintf(" (one of %s)", strings.Join(st.Coord.Servers, ", "))
	}
	fmt.Printf("coord     %s  %s\n", st.Coord.Addr, coord)
	if st.Self.SOCKS != "" {
		fmt.Printf("socks5    %s\n", st.Self.SOCKS)
	}
	if len(st.Self.Exposed) > 0 {
		fmt.Printf("exposed   %s\n", strings.Join(st.Self.Exposed, ", "))
	}
	if len(st.Self.DNS) > 0 {
		fmt.Printf("dns       %s  NAME.warren for the TUN device and warren run", joinAddrs(st.Self.DNS))
		if st.Self.DNSSetup != "" {
			fmt.Printf("; %s", st.Self.DNSSetup)
		}
		fmt.Println()
	}
	if n := st.Self.NAT; n != nil && n.UDP {
		fmt.Printf("nat       public %s, %s mapping, hairpin %s\n", n.Public, n.Mapping, map[bool]string{true: "yes", false: "no"}[n.Hairpin])
	}
	s := st.Stats
	fmt.Printf("packets   %d sent to peers; dropped: %d queue full, %d no route, %d spoofed, %d rate limited, %d by access rules\n",
		s.PacketsSent, s.DroppedQueueFull, s.DroppedNoRoute, s.DroppedSpoofed, s.DroppedRateLimited, s.DroppedACL)
	printJoinRequests(st.JoinRequests, st.JoinRequestsMore)
	fmt.Println()
	if len(st.Peers) == 0 {
		fmt.Println("no peers yet: join a network that other nodes are in ('warren network join NAME')")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tADDRESS\tSTATE\tPATH\tENDPOINT\tRTT")
	for _, p := range st.Peers {
		state := p.State
		rtt := "-"
		if p.Path != "none" && p.Path != "idle" {
			rtt = fmt.Sprintf("%.1f ms", p.RTTms)
		}
		var ip4 string
		if len(p.IPs) > 0 {
			ip4 = p.IPs[0].String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, ip4, state, p.Path, orNone(p.Endpoint), rtt)
	}
	return tw.Flush()
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, " ")
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printJoinRequests lists the nodes waiting for this node's approval, if any.
func printJoinRequests(reqs []localapi.JoinRequest, more int) {
	if len(reqs)+more == 0 {
		return
	}
	fmt.Printf("joins     %d waiting for your approval ('warren network approve|deny NETWORK NODE'):\n", len(reqs)+more)
	for _, r := range reqs {
		fmt.Printf("          %s asks to join %s (%s, %v ago)\n", r.Name, r.Network, r.Key, time.Since(r.RequestedAt).Round(time.Second))
	}
	if more > 0 {
		fmt.Printf("          and %d more: 'warren network pending NETWORK'\n", more)
	}
}
