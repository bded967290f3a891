package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/warren-net/warren/coord/operator"
	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
	"github.com/warren-net/warren/identity"
)

const authKeyUsage = `usage:
  warren-coord authkey create --data DIR --network NAME [--reusable] [--ephemeral] [--expiry 1h] [--tag TAG] [--coord HOST:PORT]
  warren-coord authkey list --data DIR [--json]
  warren-coord authkey revoke --data DIR ID

Auth keys let nodes join a network without its password: 'warren up --authkey KEY'
(or WARREN_AUTHKEY, or --authkey-file). 'create' prints the key once, alone on the
last line of its output (capture it with '| tail -1'); only its hash is stored.
Like the other admin commands they go through the running server's admin socket, or
work on the data directory directly when no server runs; create and revoke are audited.
`

// cmdAuthKey runs 'warren-coord authkey ...', writing its output to out.
func cmdAuthKey(args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, authKeyUsage)
		return errors.New("authkey: want create, list or revoke")
	}
	sub, args := args[0], args[1:]
	fs, data := operatorFlags("authkey "+sub, authKeyUsage)
	switch sub {
	case "create":
		network := fs.String("network", "", "the `network` the key joins (required; it must exist)")
		reusable := fs.Bool("reusable", false, "any number of nodes may use the key (default: one)")
		ephemeral := fs.Bool("ephemeral", false, "nodes that join with it are removed once offline (see --ephemeral-timeout)")
		expiry := fs.String("expiry", "", "the key expires after this `duration`, e.g. 1h, 30m, 7d (default: never)")
		tag := fs.String("tag", "", "`tag` recorded on nodes that join with it")
		coordAddr := fs.String("coord", "HOST:PORT", "the `address` nodes reach this server at, for the printed join command")
		if _, err := parseFlags(fs, args, 0); err != nil {
			return err
		}
		if *network == "" {
			return errors.New("authkey create: --network NAME is required")
		}
		d, err := parseExpiry(*expiry)
		if err != nil {
			return err
		}
		req := &operatorapi.Request{Op: operatorapi.OpAuthKeyCreate, Network: *network, Reusable: *reusable, Ephemeral: *ephemeral,
			Tag: *tag, ExpirySeconds: int64((d + time.Second - 1) / time.Second)}
		return withOperator(*data, "", func(ctx context.Context, dr doer) error {
			var k operatorapi.NewAuthKey
			if err := dr.do(ctx, req, &k); err != nil {
				return err
			}
			fmt.Fprintf(out, "auth key %s for network %q: %s\n", k.AuthKey.ID, k.AuthKey.Network, operator.DescribeKey(k.AuthKey))
			if key, err := identity.Load(filepath.Join(*data, "key.pem")); err == nil {
				// The coord's key travels with its address: a node's first connection is pinned.
				fmt.Fprintf(out, "join with: warren up --coord %s --authkey <the key below>\n", identity.PinnedAddr(*coordAddr, key.Fingerprint()))
			}
			fmt.Fprintln(out, "the key is shown only this once (only its hash is stored); use it with 'warren up --authkey' or WARREN_AUTHKEY:")
			fmt.Fprintln(out, k.Secret)
			return nil
		})
	case "list":
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parseFlags(fs, args, 0); err != nil {
			return err
		}
		return list(out, *data, "", &operatorapi.Request{Op: operatorapi.OpAuthKeys}, *asJSON, func(keys []operatorapi.AuthKey, _ bool) error {
			return printTable(out, keys, "no auth keys ('warren-coord authkey create' makes one)", "ID\tNETWORK\tSTATE\tUSES\tKIND\tTAG\tCREATED\tEXPIRES", keyRow)
		})
	case "revoke":
		pos, err := parseFlags(fs, args, 1)
		if err != nil {
			return err
		}
		id := pos[0]
		return withOperator(*data, "", func(ctx context.Context, d doer) error {
			var k operatorapi.AuthKey
			if err := d.do(ctx, &operatorapi.Request{Op: operatorapi.OpAuthKeyRevoke, ID: id}, &k); err != nil {
				return err
			}
			fmt.Fprintf(out, "revoked auth key %s: new logins with it are refused (nodes that joined with it stay)\n", id)
			return nil
		})
	case "-h", "--help", "help":
		fmt.Fprint(out, authKeyUsage)
		return nil
	}
	fmt.Fprint(os.Stderr, authKeyUsage)
	return fmt.Errorf("authkey: unknown command %q (want create, list or revoke)", sub)
}

// parseFlags parses flags that may come before or after positional arguments and returns the
// positional ones, of which it wants exactly npos.
func parseFlags(fs *flag.FlagSet, args []string, npos int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(0)
			}
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != npos {
		fs.Usage()
		return nil, fmt.Errorf("%s: want %d argument(s), got %d", fs.Name(), npos, len(pos))
	}
	return pos, nil
}

// parseExpiry accepts Go durations and whole days ("7d"); "" means never.
func parseExpiry(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--expiry %q: want a positive duration like 30m, 1h or 7d", s)
	}
	return d, nil
}

// withStore opens the server's database in dir (it must exist), runs f and closes it.
func withStore(dir string, f func(context.Context, *store.Store) error) error {
	if dir == "" {
		return errors.New("--data DIR is required")
	}
	path := filepath.Join(dir, "warren.db")
	if url, err := os.ReadFile(filepath.Join(dir, dbURLFile)); err == nil {
		path = strings.TrimSpace(string(url)) // the server runs on PostgreSQL (--db)
	} else if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no database in %s (start 'warren-coord --data %s' once first): %w", dir, dir, err)
	}
	st, err := store.Open(path, store.Pools{})
	if err != nil {
		return openError(dir, err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f(ctx, st)
}

// keyRow is an auth key's line in 'authkey list'.
func keyRow(k operatorapi.AuthKey) string {
	kind := "single-use"
	if k.Reusable {
		kind = "reusable"
	}
	if k.Ephemeral {
		kind += ",ephemeral"
	}
	expires := "never"
	if k.ExpiresAt != nil {
		expires = k.ExpiresAt.Format(time.RFC3339)
	}
	return fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s", k.ID, k.Network, k.State, k.Uses, kind, orDash(k.Tag),
		k.CreatedAt.Format(time.RFC3339), expires)
}
