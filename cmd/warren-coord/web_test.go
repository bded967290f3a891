package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/warren-net/warren/coord/operatorapi"
)

type fakeOps struct {
	ops   []operatorapi.Op
	nodes []operatorapi.Node // nil: one node, alice, online
	err   error
}

func (f *fakeOps) Do(_ context.Context, _ string, r *operatorapi.Request) (any, error) {
	f.ops = append(f.ops, r.Op)
	if f.err != nil {
		return nil, f.err
	}
	switch r.Op {
	case operatorapi.OpNodes:
		if f.nodes != nil {
			return f.nodes, nil
		}
		on := true
		return []operatorapi.Node{{Name: "alice", Online: &on}}, nil
	case operatorapi.OpNetworks:
		return []operatorapi.Network{{Name: "lan"}}, nil
	case operatorapi.OpRelays:
		n := 2
		return []operatorapi.Relay{{Kind: "coord", Nodes: &n}}, nil
	}
	return nil, errors.New("not a listing")
}

// TestCoordWebAPI: the operator page runs only the three listings, and says when one fails.
func TestCoordWebAPI(t *testing.T) {
	f := &fakeOps{}
	w := httptest.NewRecorder()
	coordWebAPI(f).ServeHTTP(w, httptest.NewRequest("GET", "/api/status", nil))
	var st coordStatus
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || w.Code != 200 {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if len(st.Nodes) != 1 || len(st.Networks) != 1 || len(st.Relays) != 1 || *st.Relays[0].Nodes != 2 || st.NodesTotal != 1 || st.NodesOnline != 1 {
		t.Errorf("status %+v", st)
	}
	want := []operatorapi.Op{operatorapi.OpNodes, operatorapi.OpNetworks, operatorapi.OpRelays}
	if len(f.ops) != 3 || f.ops[0] != want[0] || f.ops[1] != want[1] || f.ops[2] != want[2] {
		t.Errorf("ops %v, want %v", f.ops, want)
	}
	for _, m := range []string{"POST", "DELETE"} {
		w := httptest.NewRecorder()
		coordWebAPI(f).ServeHTTP(w, httptest.NewRequest(m, "/api/status", nil))
		if w.Code != 405 {
			t.Errorf("%s: %d, want 405 (read only)", m, w.Code)
		}
	}
	// A large server: the page lists the first webMaxListed, and counts them all.
	f.nodes = make([]operatorapi.Node, webMaxListed+5)
	w = httptest.NewRecorder()
	coordWebAPI(f).ServeHTTP(w, httptest.NewRequest("GET", "/api/status", nil))
	st = coordStatus{}
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || len(st.Nodes) != webMaxListed || st.NodesTotal != webMaxListed+5 || st.NodesOnline != 0 {
		t.Errorf("large server: %d nodes listed, total %d, online %d (%v)", len(st.Nodes), st.NodesTotal, st.NodesOnline, err)
	}
	f.err = errors.New("database is locked")
	w = httptest.NewRecorder()
	coordWebAPI(f).ServeHTTP(w, httptest.NewRequest("GET", "/api/status", nil))
	if w.Code != 500 {
		t.Errorf("failing listing: %d", w.Code)
	}
}
