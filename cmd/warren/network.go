package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-net/warren/node/localapi"
)

const networkSynopsis = `network OP NETWORK [NODE] [flags]

  list [--json]                                the networks this node is in: role (owner or member)
                                               and member count
  create NETWORK --password P|--approval|--open
                                               create a network (you own it): joins need the password, or
                                               your approval (both may be given), or nothing (--open: anyone
                                               who names the network joins it)
  join NETWORK [--password P]                  join (exit status 3 if the owner must approve it first)
  leave NETWORK                                leave
owner actions (NODE is a node's name, or its key fingerprint):
  members NETWORK [--json]                     members (any member); with pending joins and bans for the owner
  pending NETWORK [--json]                     joins awaiting approval
  approve|deny NETWORK NODE                    let a pending node in, or drop its request
  deny NETWORK --all                           drop every pending request
  kick NETWORK NODE                            remove a member (it may ask to join again)
  ban|unban NETWORK NODE                       kick and keep out, or let back in
  lock|unlock NETWORK                          refuse or allow new members
  approval NETWORK on|off [--open]             whether joins need your approval (off without a password: --open)
  password NETWORK --password P|--no-password [--open]
                                               change the password (members stay); removing it from a
                                               network that needs no approval opens it: say --open
  transfer NETWORK NODE                        make another member the owner
  delete NETWORK                               delete the network (its members are told)
access rules (see README, "Access rules"):
  acl set NETWORK FILE                         set the rules (owner only; FILE - = standard input)
  acl show NETWORK [--json]                    show them (--json: as a rule file)
  acl clear NETWORK                            remove them: members reach each other's exposed ports`

// exitPending is warren network join's exit status when the join awaits the owner's approval.
const exitPending = 3

func cmdNetwork(args []string) error {
	fs := newFlagSet("network", networkSynopsis)
	state := stateFlag(fs)
	password := fs.String("password", "", "network `password` (or set WARREN_PASSWORD)")
	noPassword := fs.Bool("no-password", false, "password: remove the network's password")
	approval := fs.Bool("approval", false, "create: joins need the owner's approval")
	open := fs.Bool("open", false, "create, password --no-password, approval off: anyone who names the network may join it (no password, no approval)")
	all := fs.Bool("all", false, "deny: drop every pending join request")
	asJSON := fs.Bool("json", false, "list, members, pending, acl show: print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 && pos[0] == "acl" {
		return cmdACL(fs, *state, pos[1:], *asJSON)
	}
	if len(pos) > 0 && pos[0] == "list" {
		if len(pos) > 1 {
			return fmt.Errorf("network list: unexpected argument %q", pos[1])
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		nets, err := listNetworks(ctx, localapi.NewClient(*state))
		if err != nil {
			return fmt.Errorf("network list: %w", err)
		}
		return printNetworks(nets, *asJSON)
	}
	if len(pos) < 2 {
		fs.Usage()
		return errors.New("network: want an operation and a network name")
	}
	op, name, rest := pos[0], pos[1], pos[2:]
	if *password == "" {
		*password = os.Getenv("WARREN_PASSWORD")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := localapi.NewClient(*state)
	switch op {
	case "create", "join", "leave":
		if len(rest) > 0 {
			return fmt.Errorf("network %s: unexpected argument %q", op, rest[0])
		}
		rep, err := client.Network(ctx, localapi.NetworkRequest{Op: op, Name: name, Password: *password, Approval: *approval, Open: *open && op == "create"})
		var lerr *localapi.Error
		if op == "join" && errors.As(err, &lerr) && lerr.Code == "pending" {
			fmt.Printf("join request for network %q sent: it awaits the owner's approval; this node becomes a member once approved\n", name)
			return exitCode(exitPending)
		}
		if err != nil {
			return fmt.Errorf("network %s %s: %w", op, name, err)
		}
		past := map[string]string{"create": "created", "join": "joined", "leave": "left"}[op]
		fmt.Printf("%s network %q; this node is now in: %s\n", past, name, orNone(strings.Join(rep.Networks, ", ")))
		return nil
	}
	req := localapi.OwnerRequest{Op: op, Network: name}
	switch op {
	case "deny":
		if *all {
			if len(rest) != 0 {
				return errors.New("network deny --all: want the network only")
			}
			req.All = true
			break
		}
		fallthrough
	case "approve", "kick", "ban", "unban", "transfer":
		if len(rest) != 1 {
			return fmt.Errorf("network %s: want the network and one node (name or key fingerprint)", op)
		}
		req.Target = rest[0]
	case "approval":
		if len(rest) != 1 || (rest[0] != "on" && rest[0] != "off") {
			return errors.New("network approval: want the network and on or off")
		}
		req.Approval = rest[0] == "on"
		req.Open = *open
	case "password":
		if (*password == "") == !*noPassword {
			return errors.New("network password: give the new password with --password (or WARREN_PASSWORD), or --no-password")
		}
		req.Password = *password
		req.Open = *open
	case "lock", "unlock", "delete", "members", "pending":
	default:
		fs.Usage()
		return fmt.Errorf("network: unknown operation %q", op)
	}
	if req.Target == "" && len(rest) > 0 && op != "approval" {
		return fmt.Errorf("network %s: unexpected argument %q", op, rest[0])
	}
	rep, err := client.Owner(ctx, req)
	if err != nil {
		return fmt.Errorf("network %s %s: %w", op, name, err)
	}
	switch {
	case op == "members", op == "pending":
		return printMembers(rep.Members, *asJSON, op == "pending")
	case req.All:
		fmt.Printf("denied %d join requests to network %q\n", len(rep.Members), name)
		return nil
	}
	done := map[string]string{
		"approve": "approved %[2]s: it is a member of network %[1]q now", "deny": "denied %[2]s's request to join network %[1]q",
		"kick": "kicked %[2]s from network %[1]q", "ban": "banned %[2]s from network %[1]q", "unban": "lifted the ban on %[2]s in network %[1]q",
		"lock": "locked network %[1]q: it takes no new members", "unlock": "unlocked network %[1]q",
		"approval": "network %[1]q: joins need approval: %[3]s", "password": "changed the password of network %[1]q",
		"transfer": "network %[1]q now belongs to %[2]s", "delete": "deleted network %[1]q",
	}[op]
	fmt.Printf(done+"\n", name, req.Target, map[bool]string{true: "on", false: "off"}[req.Approval])
	return nil
}

func printMembers(ms []localapi.Member, asJSON, pending bool) error {
	if asJSON {
		return printJSON(ms)
	}
	if len(ms) == 0 {
		if pending {
			fmt.Println("no pending joins")
		} else {
			fmt.Println("no members")
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tONLINE\tOWNER\tKEY")
	for _, m := range ms {
		ip := "-"
		if len(m.IPs) > 0 {
			ip = m.IPs[0].String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, ip, m.State, yesNo(m.Online), map[bool]string{true: "owner", false: "-"}[m.Owner], m.Key)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
