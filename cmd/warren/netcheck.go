package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

func cmdNetcheck(args []string) error {
	fs := newFlagSet("netcheck [--json]", "netcheck [--json]")
	state := stateFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) != 0 {
		fs.Usage()
		return errors.New("netcheck: takes no arguments")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := localapi.NewClient(*state).Netcheck(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(rep)
	}
	yes := map[bool]string{true: "yes", false: "no"}
	fmt.Printf("UDP:          %s\n", yes[rep.UDP])
	if !rep.UDP && rep.CoordTransport == "tcp" {
		fmt.Println("The coordination server does not answer over UDP: this network blocks UDP. warren reaches it over TCP,")
		fmt.Println("and its peers through a relay over TCP (slower than direct; it moves back when UDP works).")
		fmt.Printf("coord:        %.2f ms%s\n", rep.CoordRTTms, over(rep.CoordTransport))
		printRelays(rep)
		return nil
	}
	if !rep.UDP {
		fmt.Println("The coordination server does not answer over UDP: this network blocks UDP, and the TCP fallback is not up.")
		return errors.New("netcheck: no UDP")
	}
	mapping := rep.Mapping
	switch rep.Mapping {
	case "endpoint-independent":
		mapping += " (easy: direct paths to most peers)"
	case "endpoint-dependent":
		if rep.Allocation == "sequential" {
			mapping += " (symmetric NAT: direct to peers with an easy NAT or a sequential one, else relay)"
		} else {
			mapping += " (symmetric NAT: direct only to peers with an easy NAT, else relay)"
		}
	}
	fmt.Printf("public:       %s\n", rep.Public)
	fmt.Printf("mapping:      %s\n", mapping)
	switch rep.Allocation {
	case "sequential":
		fmt.Printf("ports:        sequential, %+d per mapping (last %d): peers predict the next ones\n", rep.PortDelta, rep.LastPort)
	case "random":
		fmt.Println("ports:        random (nothing to predict)")
	}
	fmt.Printf("hairpinning:  %s\n", yes[rep.Hairpin])
	if rep.Portmap != "" { // an older node does not say
		fmt.Printf("portmap:      %s\n", rep.Portmap)
	}
	fmt.Printf("coord:        %.2f ms%s\n", rep.CoordRTTms, over(rep.CoordTransport))
	printRelays(rep)
	return nil
}

// over names a transport for netcheck's lines: " over udp", " over tcp", or nothing if unknown.
func over(transport string) string {
	if transport == "" {
		return ""
	}
	return " over " + transport
}

// printRelays prints netcheck's relay lines: the one in use, then the others.
func printRelays(rep *localapi.Netcheck) {
	if rep.Relay != "" {
		fmt.Printf("relay:        %s, %.2f ms%s (in use)\n", rep.Relay, rep.RelayRTTms, over(rep.RelayTransport))
	} else {
		fmt.Println("relay:        none")
	}
	for _, r := range rep.Relays {
		if r.InUse {
			continue // shown above
		}
		login := ""
		if r.Login != "" && r.Login != "logged in" {
			login = "; " + r.Login
		}
		if r.OK {
			fmt.Printf("relay:        %s, %.2f ms%s%s\n", r.Addr, r.RTTms, over(r.Transport), login)
		} else {
			fmt.Printf("relay:        %s, no answer%s\n", r.Addr, login)
		}
	}
}
