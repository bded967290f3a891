package main

import (
	"context"
	"net/http"
	"time"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/internal/webui"
)

// operatorDoer performs operator requests (a *operator.Commands).
type operatorDoer interface {
	Do(ctx context.Context, actor string, r *operatorapi.Request) (any, error)
}

// coordStatus is what the operator page shows, polled from GET api/status. Nodes and Networks hold
// at most webMaxListed entries each; the totals count them all.
type coordStatus struct {
	Nodes         []operatorapi.Node    `json:"nodes"`
	Networks      []operatorapi.Network `json:"networks"`
	Relays        []operatorapi.Relay   `json:"relays"`
	NodesTotal    int                   `json:"nodes_total"`
	NodesOnline   int                   `json:"nodes_online"`
	NetworksTotal int                   `json:"networks_total"`
}

// webMaxListed bounds the nodes and networks one answer lists, so that a page left open on a large
// server stays small (the CLI listings give them all).
const webMaxListed = 1000

// coordWebAPI is the operator page's API: read only, the same listings as 'warren-coord nodes',
// 'networks' and 'relays'.
func coordWebAPI(ops operatorDoer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var st coordStatus
		for _, q := range []struct {
			op  operatorapi.Op
			set func(any)
		}{
			{operatorapi.OpNodes, func(v any) { st.Nodes = v.([]operatorapi.Node) }},
			{operatorapi.OpNetworks, func(v any) { st.Networks = v.([]operatorapi.Network) }},
			{operatorapi.OpRelays, func(v any) { st.Relays = v.([]operatorapi.Relay) }},
		} {
			v, err := ops.Do(ctx, "web page", &operatorapi.Request{Op: q.op})
			if err != nil {
				webui.WriteError(w, http.StatusInternalServerError, err.Error())
				return
			}
			q.set(v)
		}
		st.NodesTotal, st.NetworksTotal = len(st.Nodes), len(st.Networks)
		for _, n := range st.Nodes {
			if n.Online != nil && *n.Online {
				st.NodesOnline++
			}
		}
		st.Nodes, st.Networks = st.Nodes[:min(len(st.Nodes), webMaxListed)], st.Networks[:min(len(st.Networks), webMaxListed)]
		webui.WriteJSON(w, http.StatusOK, st)
	})
	return mux
}
