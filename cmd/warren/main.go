// Command warren runs a warren node (`warren up`) and talks to a running one (`warren status`,
// `warren network ...`) through the local API socket in the node's state directory.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ver "github.com/warren-net/warren/internal/version"
)

const usage = `usage: warren COMMAND [flags]

commands:
  up [-- COMMAND [ARGS...]]  run a node in the foreground (no root needed); with a
                             command: until it exits (--authkey KEY joins unattended)
  down                       log the node out (an ephemeral one is removed) and stop it
  status [--json]            show this node and its peers
  network create NAME        create a network (--password P to require one,
                             --approval to approve every join)
  network join NAME          join a network (--password P if it has one)
  network leave NAME         leave a network
  network members NAME       list members; the owner also sees pending joins and bans
  network approve|deny|kick|ban|unban|transfer NAME NODE
  network lock|unlock|delete|pending NAME, approval NAME on|off, password NAME
                             owner actions ('warren network -h' for details)
  network acl set NAME FILE  set a network's access rules (owner only; FILE - = stdin)
  network acl show NAME      show them (--json: as a rule file)
  network acl clear NAME     remove them: members reach each other's exposed ports
  rename NEWNAME             rename this node (names are unique in each network;
                             a login under another --name does not rename)
  run -- COMMAND [ARGS...]   run COMMAND in a namespace of its own whose network is the
                             overlay (no proxy settings, no root; Linux)
  ping PEER [-c N]           ICMP echo through the overlay, with RTT and path
  web [--listen ADDR]        serve a status page for the node on loopback (prints its URL)
  netcheck [--json]          UDP connectivity, public address, NAT type, relay latency
  whois ADDR:PORT [--json]   name the peer behind a connection an exposed service got
                             from ADDR:PORT (the client address it saw)
  metrics                    print the node's Prometheus metrics (text format)
  version                    print the version

Every command takes --state DIR (default: $WARREN_STATE, else $XDG_STATE_HOME/warren).
Flags may come before or after arguments. 'warren COMMAND -h' lists a command's flags.
`

// version is set at build time with -ldflags "-X main.version=..." (make build and make release set
// `git describe`); version.String falls back to the module version the go command recorded.
var version = ver.Dev

func main() {
	if err := run(os.Args[1:]); err != nil {
		if stateDir != nil {
			err = explainNotRunning(err, *stateDir, dialSocket)
		}
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "warren:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		return cmdUp(rest)
	case "down":
		return cmdDown(rest)
	case "status":
		return cmdStatus(rest)
	case "network", "net":
		return cmdNetwork(rest)
	case "rename":
		return cmdRename(rest)
	case "ping":
		return cmdPing(rest)
	case "netcheck":
		return cmdNetcheck(rest)
	case "web":
		return cmdWeb(rest)
	case "whois":
		return cmdWhois(rest)
	case "metrics":
		return cmdMetrics(rest)
	case "run":
		return cmdRun(rest)
	case runNSCommand:
		return cmdRunNS(rest)
	case "version", "--version":
		fmt.Println("warren", ver.String(version))
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// parse parses flags that may appear before, between or after positional arguments and returns the
// positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func stateFlag(fs *flag.FlagSet) *string {
	stateDir = fs.String("state", defaultStateDir(), "state `dir`ectory of the node (identity key, coord pin, API socket)")
	return stateDir
}

func defaultStateDir() string {
	if d := os.Getenv("WARREN_STATE"); d != "" {
		return d // set by 'warren up -- COMMAND' for the command
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "warren")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "warren")
	}
	return ".warren"
}

func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: warren %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// printJSON writes v to stdout as indented JSON.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// listFlag collects comma-separated or repeated flag values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}
