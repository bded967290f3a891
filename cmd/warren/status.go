package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-net/warren/localapi"
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
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	coord := "disconnected (tunnels stay up; reconnecting)"
	if st.Coord.Connected {
		coord = "connected"
	}
	fmt.Printf("node      %s  %s\n", st.Self.Name, joinAddrs(st.Self.IPs))
	fmt.Printf("networks  %s\n", orNone(strings.Join(st.Self.Networks, ", ")))
	fmt.Printf("coord     %s  %s\n", st.Coord.Addr, coord)
	if st.Self.SOCKS != "" {
		fmt.Printf("socks5    %s\n", st.Self.SOCKS)
	}
	if n := st.Self.NAT; n != nil && n.UDP {
		fmt.Printf("nat       public %s, %s mapping, hairpin %s\n", n.Public, n.Mapping, map[bool]string{true: "yes", false: "no"}[n.Hairpin])
	}
	s := st.Stats
	fmt.Printf("packets   %d sent to peers; dropped: %d queue full, %d no route, %d spoofed, %d rate limited, %d by access rules\n",
		s.PacketsSent, s.DroppedQueueFull, s.DroppedNoRoute, s.DroppedSpoofed, s.DroppedRateLimited, s.DroppedACL)
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
		if p.Path != "none" {
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

func cmdNetwork(args []string) error {
	const synopsis = "network create|join|leave NAME [--password P]\n       warren network acl set NAME FILE | acl show NAME [--json] | acl clear NAME"
	fs := newFlagSet("network", synopsis)
	state := stateFlag(fs)
	password := fs.String("password", "", "network `password` (or set WARREN_PASSWORD)")
	asJSON := fs.Bool("json", false, "acl show: print the rules as JSON (a rule file)")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 && pos[0] == "acl" {
		return cmdACL(fs, *state, pos[1:], *asJSON)
	}
	if len(pos) != 2 {
		fs.Usage()
		return errors.New("network: want an operation (create, join, leave) and a network name")
	}
	op, name := pos[0], pos[1]
	if *password == "" {
		*password = os.Getenv("WARREN_PASSWORD")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := localapi.NewClient(*state).Network(ctx, localapi.NetworkRequest{Op: op, Name: name, Password: *password})
	if err != nil {
		return fmt.Errorf("network %s %s: %w", op, name, err)
	}
	past := map[string]string{"create": "created", "join": "joined", "leave": "left"}[op]
	fmt.Printf("%s network %q; this node is now in: %s\n", past, name, orNone(strings.Join(rep.Networks, ", ")))
	return nil
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
