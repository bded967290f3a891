package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

// cmdWhois runs `warren whois ADDR:PORT`: an exposed service sees every peer as 127.0.0.1 (proxy
// mode); given the client address it saw, the node names the peer behind that connection while it
// is open.
func cmdWhois(args []string) error {
	fs := newFlagSet("whois", "whois [--json] ADDR:PORT")
	state := stateFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("whois: want the client address a service saw, ADDR:PORT")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := localapi.NewClient(*state).Whois(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("whois: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(w)
	}
	fmt.Printf("name      %s\n", w.Name)
	fmt.Printf("key       %s\n", w.Key)
	fmt.Printf("ips       %s\n", joinAddrs(w.IPs))
	fmt.Printf("networks  %s\n", orNone(strings.Join(w.Networks, ", ")))
	fmt.Printf("source    %s\n", w.Source)
	return nil
}
