package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/warren-net/warren/acl"
	"github.com/warren-net/warren/node/localapi"
)

// cmdACL runs `warren network acl set NAME FILE | show NAME [--json] | clear NAME`.
func cmdACL(fs *flag.FlagSet, state string, pos []string, asJSON bool) error {
	if len(pos) < 2 {
		fs.Usage()
		return errors.New("network acl: want set NAME FILE, show NAME or clear NAME")
	}
	op, name := pos[0], pos[1]
	req := localapi.ACLRequest{Op: op, Network: name}
	switch {
	case op == "set" && len(pos) == 3:
		f, err := readRuleFile(pos[2])
		if err != nil {
			return err
		}
		if f.Network != "" && f.Network != name {
			return fmt.Errorf("network acl set: %s is for network %q, not %q", pos[2], f.Network, name)
		}
		for _, r := range f.Rules {
			req.Rules = append(req.Rules, localapi.ACLRule(r))
		}
	case (op == "show" || op == "clear") && len(pos) == 2:
	default:
		fs.Usage()
		return fmt.Errorf("network acl: want set NAME FILE, show NAME or clear NAME, not %q", strings.Join(pos, " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := localapi.NewClient(state).ACL(ctx, req)
	if err != nil {
		return fmt.Errorf("network acl %s %s: %w", op, name, err)
	}
	if asJSON {
		return printJSON(a)
	}
	switch op {
	case "set":
		fmt.Printf("network %q: %d rules in force; anything they do not allow is refused\n", name, len(a.Rules))
	case "clear":
		fmt.Printf("network %q: rules cleared; members reach each other's exposed ports\n", name)
	default:
		printRules(a)
	}
	return nil
}

// readRuleFile reads and checks a rule file ("-" = standard input).
func readRuleFile(path string) (*acl.File, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, acl.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	f, err := acl.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func printRules(a *localapi.ACL) {
	if len(a.Rules) == 0 {
		fmt.Printf("network %q: no rules; members reach each other's exposed ports\n", a.Network)
		return
	}
	fmt.Printf("network %q: %d rules; anything they do not allow is refused\n", a.Network, len(a.Rules))
	for i, r := range a.Rules {
		fmt.Printf("  %d. %s -> %s: %s\n", i+1, strings.Join(r.From, ", "), strings.Join(r.To, ", "), strings.Join(r.Ports, ", "))
	}
}
