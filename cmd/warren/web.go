package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warren-net/warren/internal/webui"
	"github.com/warren-net/warren/node/localapi"
)

// cmdWeb serves the node's status page on loopback until interrupted; the page reads the running
// node through its local API.
func cmdWeb(args []string) error {
	fs := newFlagSet("web", "web [--listen 127.0.0.1:PORT] [--state DIR]\n\n"+
		"Serves a status page for the running node: peers, paths, RTT, exposed ports, join requests\n"+
		"to approve or deny. It listens on loopback only and prints its URL, which holds a secret made\n"+
		"for this start: only who has the URL can open the page.")
	state := stateFlag(fs)
	listen := fs.String("listen", "127.0.0.1:0", "loopback `address` for the page (port 0: any free one)")
	pos, err := parse(fs, args)
	if err != nil {
		return flagErr(err)
	}
	if len(pos) > 0 {
		return fmt.Errorf("web: unexpected argument %q", pos[0])
	}
	c := localapi.NewClient(*state)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	check, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = c.Status(check)
	cancel()
	if err != nil {
		return err
	}
	srv, err := startWeb(*listen, c)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Printf("web page: %s\n", srv.URL())
	<-ctx.Done()
	return nil
}

// startWeb serves the node page for the node behind c on addr.
func startWeb(addr string, c nodeAPI) (*webui.Server, error) {
	srv, err := webui.Start(addr, webui.NodePage, webAPI(c))
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	return srv, nil
}

// nodeAPI is what the page needs of the node (a *localapi.Client).
type nodeAPI interface {
	Status(ctx context.Context) (*localapi.Status, error)
	Owner(ctx context.Context, req localapi.OwnerRequest) (*localapi.OwnerReply, error)
}

// joinDecision is what the page's Approve and Deny buttons send (POST api/join).
type joinDecision struct {
	Op      string `json:"op"` // "approve" or "deny"
	Network string `json:"network"`
	Key     string `json:"key"` // the requesting node's key fingerprint
}

// webAPI is the page's JSON API behind the guard: GET api/status (the node's status, polled), POST
// api/join (approve or deny a join request through the same local API call as 'warren network
// approve|deny').
func webAPI(c nodeAPI) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil {
			writeWebError(w, err)
			return
		}
		webui.WriteJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /api/join", func(w http.ResponseWriter, r *http.Request) {
		var d joinDecision
		if err := webui.ReadJSON(r.Body, &d); err != nil {
			webui.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if d.Op != "approve" && d.Op != "deny" || d.Network == "" || d.Key == "" || len(d.Network) > 256 || len(d.Key) > 256 {
			webui.WriteError(w, http.StatusBadRequest, "want op approve or deny, a network and a node key")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		if _, err := c.Owner(ctx, localapi.OwnerRequest{Op: d.Op, Network: d.Network, Target: d.Key}); err != nil {
			writeWebError(w, err)
			return
		}
		webui.WriteJSON(w, http.StatusOK, map[string]string{"done": d.Op})
	})
	return mux
}

// writeWebError answers with err: a refusal the node or coord gave (not the owner, unknown node) as
// 409, a node that stopped as 503.
func writeWebError(w http.ResponseWriter, err error) {
	var e *localapi.Error
	switch {
	case errors.As(err, &e):
		webui.WriteError(w, http.StatusConflict, e.Message)
	case errors.Is(err, localapi.ErrNotRunning):
		webui.WriteError(w, http.StatusServiceUnavailable, "the node is not running")
	default:
		webui.WriteError(w, http.StatusBadGateway, err.Error())
	}
}
