package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/warren-net/warren/node/localapi"
)

// fakeNetworkAPI answers Status with its networks and the members listing with its rosters.
type fakeNetworkAPI struct {
	self    string
	nets    []string
	rosters map[string][]localapi.Member
	asked   int
}

func (f *fakeNetworkAPI) Status(context.Context) (*localapi.Status, error) {
	return &localapi.Status{Self: localapi.Self{Key: f.self, Networks: f.nets}}, nil
}

func (f *fakeNetworkAPI) Owner(_ context.Context, req localapi.OwnerRequest) (*localapi.OwnerReply, error) {
	f.asked++
	if req.Op != "members" {
		return nil, fmt.Errorf("unexpected op %q", req.Op)
	}
	r, ok := f.rosters[req.Network]
	if !ok {
		return nil, &localapi.Error{Code: "not_member", Message: "not a member"}
	}
	return &localapi.OwnerReply{Members: r}, nil
}

// TestListNetworks: warren network list gives each network this node is in with its role and the
// count of members (not pending or banned nodes), marks a roster it could not fetch, and asks for
// at most maxListedRosters rosters.
func TestListNetworks(t *testing.T) {
	f := &fakeNetworkAPI{self: "SHA256:me", nets: []string{"mine", "theirs", "gone"}, rosters: map[string][]localapi.Member{
		"mine": {
			{Key: "SHA256:me", Owner: true, State: "member"},
			{Key: "SHA256:b", State: "member"},
			{Key: "SHA256:c", State: "pending"},
			{Key: "SHA256:d", State: "banned"},
		},
		"theirs": {
			{Key: "SHA256:o", Owner: true, State: "member"},
			{Key: "SHA256:me", State: "member"},
			{Key: "SHA256:x", State: "member"},
		},
	}}
	got, err := listNetworks(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	want := []networkEntry{
		{Name: "mine", Role: "owner", Members: 2},
		{Name: "theirs", Role: "member", Members: 3},
		{Name: "gone", Members: -1, Error: "not a member"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", got, want)
	}

	many := &fakeNetworkAPI{self: "SHA256:me", rosters: map[string][]localapi.Member{}}
	for i := range maxListedRosters + 5 {
		n := fmt.Sprintf("n%d", i)
		many.nets = append(many.nets, n)
		many.rosters[n] = []localapi.Member{{Key: "SHA256:me", State: "member"}}
	}
	got, err = listNetworks(context.Background(), many)
	if err != nil || len(got) != maxListedRosters+5 || many.asked != maxListedRosters {
		t.Fatalf("%d networks: %d entries, %d rosters asked, %v; want every network and %d rosters", len(many.nets), len(got), many.asked, err, maxListedRosters)
	}
	if last := got[len(got)-1]; last.Members != -1 || last.Error == "" {
		t.Errorf("network past the bound: %+v, want unknown count with a reason", last)
	}
}
