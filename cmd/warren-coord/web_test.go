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
	ops []operatorapi.Op
	err error
}

func (f *fakeOps) Do(_ context.Context, _ string, r *operatorapi.Request) (any, error) {
	f.ops = append(f.ops, r.Op)
	if f.err != nil {
		return nil, f.err
	}
	switch r.Op {
	case operatorapi.OpNodes:
		return []operatorapi.Node{{Name: "alice"}}, nil
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
	if len(st.Nodes) != 1 || len(st.Networks) != 1 || len(st.Relays) != 1 || *st.Relays[0].Nodes != 2 {
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
	f.err = errors.New("database is locked")
	w = httptest.NewRecorder()
	coordWebAPI(f).ServeHTTP(w, httptest.NewRequest("GET", "/api/status", nil))
	if w.Code != 500 {
		t.Errorf("failing listing: %d", w.Code)
	}
}
