package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/warren-net/warren/node/localapi"
)

// maxListedRosters bounds the members requests 'warren network list' makes: one per network, for the
// first this many; the rest are listed without role and count.
const maxListedRosters = 32

// networkEntry is one line of 'warren network list'.
type networkEntry struct {
	Name string `json:"name"`
	// Role is this node's part in the network: "owner" or "member" ("" if the roster could not be
	// fetched).
	Role string `json:"role,omitempty"`
	// Members counts the network's members (not pending or banned nodes); -1 if unknown.
	Members int    `json:"members"`
	Error   string `json:"error,omitempty"` // why the roster could not be fetched
}

// networkAPI is the part of the local API client that listNetworks uses.
type networkAPI interface {
	Status(ctx context.Context) (*localapi.Status, error)
	Owner(ctx context.Context, req localapi.OwnerRequest) (*localapi.OwnerReply, error)
}

// listNetworks asks the node for its networks, then each network's roster (the members listing, one
// request a network, at most maxListedRosters) for this node's role and the member count.
func listNetworks(ctx context.Context, c networkAPI) ([]networkEntry, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]networkEntry, 0, len(st.Self.Networks))
	for i, name := range st.Self.Networks {
		e := networkEntry{Name: name, Members: -1}
		if i >= maxListedRosters {
			e.Error = fmt.Sprintf("not fetched (only the first %d networks' rosters are)", maxListedRosters)
			out = append(out, e)
			continue
		}
		rep, err := c.Owner(ctx, localapi.OwnerRequest{Op: "members", Network: name})
		if err != nil {
			e.Error = err.Error()
			out = append(out, e)
			continue
		}
		e.Role, e.Members = "member", 0
		for _, m := range rep.Members {
			if m.State != "member" {
				continue
			}
			e.Members++
			if m.Key == st.Self.Key && m.Owner {
				e.Role = "owner"
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// printNetworks prints 'warren network list': a table, or JSON.
func printNetworks(nets []networkEntry, asJSON bool) error {
	if asJSON {
		return printJSON(nets)
	}
	if len(nets) == 0 {
		fmt.Println("this node is in no network (create one with 'warren network create', or join one)")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tROLE\tMEMBERS")
	for _, n := range nets {
		role, members := n.Role, fmt.Sprint(n.Members)
		if n.Error != "" {
			role, members = "?", "? ("+n.Error+")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, role, members)
	}
	return tw.Flush()
}
