package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-net/warren/coord/operator"
	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
)

const adminUsage = `usage:
  warren-coord nodes --data DIR [--json]
  warren-coord node remove NAME|KEY --data DIR
  warren-coord networks --data DIR [--json]
  warren-coord network kick|ban|unban|approve|deny|transfer NETWORK NODE --data DIR
  warren-coord network lock|unlock|delete NETWORK --data DIR
  warren-coord relays --data DIR [--json]     (the running server's relays and their load)
  warren-coord blocks --data DIR [--json]
  warren-coord block add CIDR|IP --data DIR [--comment TEXT]
  warren-coord block remove CIDR|IP --data DIR
  warren-coord audit --data DIR [--json] [--since D] [--limit N]
  warren-coord authkey create|list|revoke --data DIR ...
  warren-coord backup FILE --data DIR     (the database file itself, not the admin socket)

These commands work through the running server's admin socket (DIR/admin.sock) when it
runs, so changes take effect at once (a removed node's peers are told, a blocked range is
disconnected), and on the database in DIR directly when it does not. Every change is
written to the audit log.
`

// doer performs operator requests, through the socket or on the data directory.
type doer interface {
	do(ctx context.Context, r *operatorapi.Request, out any) error
	// live reports whether a running server performs them.
	live() bool
}

type remote struct{ c *operatorapi.Client }

func (r remote) do(ctx context.Context, req *operatorapi.Request, out any) error {
	return r.c.Do(ctx, req, out)
}
func (remote) live() bool { return true }

// local runs the same operations in this process, on the database.
type local struct {
	a     *operator.Commands
	actor string
}

func (l local) do(ctx context.Context, req *operatorapi.Request, out any) error {
	res, err := l.a.Do(ctx, l.actor, req)
	if err != nil {
		return err
	}
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}
func (local) live() bool { return false }

// withOperator runs f with a doer for the server using data directory dir: its admin socket if it
// runs, else the database. blockFile is the --blocklist given to the command ("" = the server's).
func withOperator(dir, blockFile string, f func(context.Context, doer) error) error {
	if dir == "" {
		return errors.New("--data DIR is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := operatorapi.NewClient(dir)
	running, err := c.Running(ctx)
	if err != nil {
		return err
	}
	if running {
		if blockFile != "" {
			return errors.New("--blocklist is for when no server runs: the running server edits its own block list")
		}
		return f(ctx, remote{c})
	}
	return withStore(dir, func(ctx context.Context, st *store.Store) error {
		a := operator.New(operator.Config{Store: st, BlockFile: blockFile, DefaultBlockFile: filepath.Join(dir, defaultBlockFile)})
		return f(ctx, local{a: a, actor: store.OperatorActor(os.Getuid())})
	})
}

// defaultBlockFile is the block list's name in the data directory when --blocklist is not given.
const defaultBlockFile = "blocklist"

// operatorFlags returns the flag set of an operator command, printing usage for -h, with the --data
// flag every such command has.
func operatorFlags(name, usage string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage+"\nflags:\n"); fs.PrintDefaults() }
	return fs, fs.String("data", "", "data `dir`ectory of the server (required)")
}

// list asks the server using data directory dir (or its database when none runs; blockFile as for
// withOperator) for req's listing, a T, and prints it: as JSON with asJSON, else with text, which
// learns whether a running server answered (live: online state is known).
func list[T any](out io.Writer, dir, blockFile string, req *operatorapi.Request, asJSON bool, text func(v T, live bool) error) error {
	return withOperator(dir, blockFile, func(ctx context.Context, d doer) error {
		var v T
		if err := d.do(ctx, req, &v); err != nil {
			return err
		}
		if asJSON {
			return printJSON(out, v)
		}
		return text(v, d.live())
	})
}

// printTable prints items in aligned columns under header, one line each as row renders it (cells
// separated by tabs), or the line empty when there are none.
func printTable[T any](out io.Writer, items []T, empty, header string, row func(T) string) error {
	if len(items) == 0 {
		fmt.Fprintln(out, empty)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// offlineNote is printed above listings whose online state is unknown.
const offlineNote = "(no server is running on this data directory: online state unknown)"

func cmdNodes(args []string, out io.Writer) error {
	fs, data := operatorFlags("nodes", adminUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	return list(out, *data, "", &operatorapi.Request{Op: operatorapi.OpNodes}, *asJSON, func(nodes []operatorapi.Node, live bool) error {
		if !live {
			fmt.Fprintln(out, offlineNote)
		}
		now := time.Now()
		return printTable(out, nodes, "no nodes yet", "NAME\tKEY\tIPV4\tONLINE\tFROM\tLAST SEEN\tNETWORKS\tNOTES", func(n operatorapi.Node) string {
			online, from, seen := "?", "-", ago(now, n.LastSeen)
			if n.Online != nil {
				online = "no"
				if *n.Online {
					online = "since " + ago(now, *n.OnlineSince)
					from, seen = n.Observed, "now"
				}
			}
			var notes []string
			if n.Ephemeral {
				notes = append(notes, "ephemeral")
			}
			if n.Tag != "" {
				notes = append(notes, "tag "+n.Tag)
			}
			return fmt.Sprintf("%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s", n.Name, n.Key, n.IPs[0], online, from, seen,
				orDash(strings.Join(n.Networks, ",")), orDash(strings.Join(notes, ", ")))
		})
	})
}

// ago renders a past time compactly: "12s ago", "3h ago", or a date beyond a week.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return "-"
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	case d < 7*24*time.Hour:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
	return t.Local().Format("2006-01-02")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdNode(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "remove" {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("node: want 'node remove NAME|KEY'")
	}
	fs, data := operatorFlags("node remove", adminUsage)
	pos, err := parseFlags(fs, args[1:], 1)
	if err != nil {
		return err
	}
	return withOperator(*data, "", func(ctx context.Context, d doer) error {
		var r operatorapi.RemovedNode
		if err := d.do(ctx, &operatorapi.Request{Op: operatorapi.OpNodeRemove, Node: pos[0]}, &r); err != nil {
			return err
		}
		fmt.Fprintf(out, "removed node %s (%s, %v): its memberships are gone and its address is free\n", r.Node.Name, r.Node.Key, r.Node.IPs[0])
		if r.Live {
			if r.WasOnline {
				fmt.Fprintln(out, "it was online and has been disconnected")
			}
			fmt.Fprintf(out, "%d peer(s) told\n", r.PeersTold)
		} else {
			fmt.Fprintln(out, "no server is running: its peers drop it when they next log in")
		}
		fmt.Fprintln(out, "if it logs in again it is a new node in no network; to keep it out, block its address ('warren-coord block add')")
		return nil
	})
}

// cmdNetwork takes an owner action on any network (the running server tells its members).
func cmdNetwork(args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("network: want an action (kick, ban, unban, approve, deny, transfer, lock, unlock, delete)")
	}
	action := args[0]
	onNode, ok := operatorapi.NetworkActions[action]
	if !ok {
		fmt.Fprint(os.Stderr, adminUsage)
		return fmt.Errorf("network: unknown action %q", action)
	}
	fs, data := operatorFlags("network "+action, adminUsage)
	npos := 1
	if onNode {
		npos = 2
	}
	pos, err := parseFlags(fs, args[1:], npos)
	if err != nil {
		return err
	}
	req := &operatorapi.Request{Op: operatorapi.OpNetwork, Action: action, Network: pos[0]}
	if onNode {
		req.Node = pos[1]
	}
	return withOperator(*data, "", func(ctx context.Context, d doer) error {
		var r operatorapi.NetworkResult
		if err := d.do(ctx, req, &r); err != nil {
			return err
		}
		if r.Node != "" {
			fmt.Fprintf(out, "network %s: %s %s done; its members are told\n", r.Network, action, r.Node)
		} else {
			fmt.Fprintf(out, "network %s: %s done; its members are told\n", r.Network, action)
		}
		return nil
	})
}

func cmdRelays(args []string, out io.Writer) error {
	fs, data := operatorFlags("relays", adminUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	return list(out, *data, "", &operatorapi.Request{Op: operatorapi.OpRelays}, *asJSON, func(relays []operatorapi.Relay, _ bool) error {
		return printTable(out, relays, "no relays (--no-relay, and no --relay announced)", "KIND\tADDRESS\tNODES\tKEY", func(r operatorapi.Relay) string {
			nodes := "?"
			if r.Nodes != nil {
				nodes = fmt.Sprint(*r.Nodes)
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s", r.Kind, r.Addr, nodes, r.Key)
		})
	})
}

func cmdNetworks(args []string, out io.Writer) error {
	fs, data := operatorFlags("networks", adminUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	return list(out, *data, "", &operatorapi.Request{Op: operatorapi.OpNetworks}, *asJSON, func(nets []operatorapi.Network, live bool) error {
		if !live {
			fmt.Fprintln(out, offlineNote)
		}
		return printTable(out, nets, "no networks yet (a node creates one: warren network create NAME)", "NAME\tOWNER\tMEMBERS\tONLINE\tPASSWORD\tCREATED", func(n operatorapi.Network) string {
			owner := n.Owner
			if n.OwnerName != "" {
				owner = n.OwnerName + " (" + n.Owner + ")"
			} else {
				owner += " (removed)"
			}
			online := "?"
			if n.Online != nil {
				online = fmt.Sprint(*n.Online)
			}
			pw := "no"
			if n.Password {
				pw = "yes"
			}
			return fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s", n.Name, owner, n.Members, online, pw, n.CreatedAt.Local().Format("2006-01-02 15:04"))
		})
	})
}

func cmdBlocks(args []string, out io.Writer) error {
	fs, data := operatorFlags("blocks", adminUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	blockFile := blockFileFlag(fs)
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	return list(out, *data, *blockFile, &operatorapi.Request{Op: operatorapi.OpBlocks}, *asJSON, func(b operatorapi.Blocks, _ bool) error {
		if len(b.Entries) > 0 {
			fmt.Fprintf(out, "block list %s:\n", b.File)
		}
		return printTable(out, b.Entries, "no blocks (block list "+b.File+")", "PREFIX\tCOMMENT", func(e operatorapi.BlockEntry) string {
			return e.Prefix + "\t" + orDash(e.Comment)
		})
	})
}

func blockFileFlag(fs *flag.FlagSet) *string {
	return fs.String("blocklist", "", "block list `file` when no server runs (default: the one the server last used, else DIR/"+defaultBlockFile+")")
}

func cmdBlock(args []string, out io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "remove") {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("block: want 'block add CIDR' or 'block remove CIDR'")
	}
	sub := args[0]
	fs, data := operatorFlags("block "+sub, adminUsage)
	blockFile := blockFileFlag(fs)
	var comment *string
	op := operatorapi.OpBlockRemove
	if sub == "add" {
		op = operatorapi.OpBlockAdd
		comment = fs.String("comment", "", "a note kept next to the entry (one line)")
	}
	pos, err := parseFlags(fs, args[1:], 1)
	if err != nil {
		return err
	}
	req := &operatorapi.Request{Op: op, Prefix: pos[0]}
	if comment != nil {
		req.Comment = *comment
	}
	return withOperator(*data, *blockFile, func(ctx context.Context, d doer) error {
		var r operatorapi.BlockChange
		if err := d.do(ctx, req, &r); err != nil {
			return err
		}
		switch {
		case !r.Changed:
			fmt.Fprintf(out, "%s is already blocked (%s)\n", r.Prefix, r.File)
		case sub == "add":
			fmt.Fprintf(out, "blocked %s (%s)\n", r.Prefix, r.File)
		default:
			fmt.Fprintf(out, "unblocked %s (%s)\n", r.Prefix, r.File)
		}
		switch {
		case !r.Applied:
			fmt.Fprintln(out, "no server is running: it applies the list when it starts")
		case len(r.Disconnected) > 0:
			fmt.Fprintf(out, "applied; disconnected %d online node(s): %s\n", len(r.Disconnected), strings.Join(r.Disconnected, ", "))
		default:
			fmt.Fprintln(out, "applied by the running server")
		}
		return nil
	})
}

func cmdAudit(args []string, out io.Writer) error {
	fs, data := operatorFlags("audit", adminUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	since := fs.String("since", "", "only entries from the last `duration`, e.g. 1h or 7d (default: all kept)")
	limit := fs.Int("limit", 0, "only the newest `N` entries (default: all kept)")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	req := &operatorapi.Request{Op: operatorapi.OpAudit, Limit: *limit}
	if *since != "" {
		d, err := parseExpiry(*since)
		if err != nil {
			return fmt.Errorf("--since %q: want a duration like 30m, 1h or 7d", *since)
		}
		req.Since = time.Now().Add(-d).Unix()
	}
	if *limit < 0 || *limit > operatorapi.MaxAuditRead {
		return fmt.Errorf("--limit %d: want 0 to %d", *limit, operatorapi.MaxAuditRead)
	}
	return list(out, *data, "", req, *asJSON, func(entries []operatorapi.AuditEntry, _ bool) error {
		return printTable(out, entries, "no audited actions", "TIME\tACTOR\tACTION\tTARGET\tDETAIL", func(e operatorapi.AuditEntry) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", e.Time.Local().Format("2006-01-02 15:04:05"), e.Actor, e.Action, orDash(e.Target), orDash(e.Detail))
		})
	})
}
