package coord

import (
	"context"
	"testing"

	"github.com/warren-net/warren/control"
)

// TestNetworkClosedByDefault (issue 13, item 2): a network without a password is no longer one that
// anyone who guesses its name joins. Creating one with neither a password nor approval is refused
// unless the request says Open; taking the last protection away later needs Open too; a network
// with neither that is not open (one only auth keys bring nodes into) refuses joins.
func TestNetworkClosedByDefault(t *testing.T) {
	srv := startServer(t)
	owner, guesser := dial(t, srv), dial(t, srv)
	owner.login(t, "owner")
	guesser.login(t, "guesser")

	rep := owner.do(t, control.CodeUnprotected, control.Request{Op: control.OpCreate, Network: "builds"})
	if rep.Error == "" {
		t.Error("the refusal says nothing")
	}
	guesser.do(t, control.CodeNotFound, control.Request{Op: control.OpJoin, Network: "builds"})
	owner.do(t, control.CodeInvalid, control.Request{Op: control.OpCreate, Network: "builds", Open: true, Password: "pw"})
	owner.do(t, control.CodeInvalid, control.Request{Op: control.OpCreate, Network: "builds", Open: true, Approval: true})

	// Open on purpose: anyone joins.
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "public", Open: true})
	guesser.do(t, "", control.Request{Op: control.OpJoin, Network: "public"})

	// A password network keeps its password unless the owner opens it on purpose; setting a password
	// closes an open network again.
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "lan", Password: "pw"})
	owner.do(t, control.CodeUnprotected, control.Request{Op: control.OpPassword, Network: "lan"})
	guesser.do(t, control.CodeWrongPassword, control.Request{Op: control.OpJoin, Network: "lan"})
	owner.do(t, "", control.Request{Op: control.OpPassword, Network: "lan", Open: true})
	guesser.do(t, "", control.Request{Op: control.OpJoin, Network: "lan"})
	guesser.do(t, "", control.Request{Op: control.OpLeave, Network: "lan"})
	owner.do(t, "", control.Request{Op: control.OpPassword, Network: "lan", Password: "new"})
	guesser.do(t, control.CodeWrongPassword, control.Request{Op: control.OpJoin, Network: "lan"})

	// Approval: turning it off on a network without a password needs Open; with a password it does not.
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "asked", Approval: true})
	guesser.do(t, control.CodePending, control.Request{Op: control.OpJoin, Network: "asked"})
	owner.do(t, control.CodeUnprotected, control.Request{Op: control.OpApproval, Network: "asked", Approval: false})
	owner.do(t, control.CodeInvalid, control.Request{Op: control.OpPassword, Network: "asked", Open: true}) // approval stays on
	owner.do(t, "", control.Request{Op: control.OpApproval, Network: "asked", Approval: false, Open: true})
	guesser.do(t, "", control.Request{Op: control.OpJoin, Network: "asked"})
	owner.do(t, "", control.Request{Op: control.OpApproval, Network: "lan", Approval: true})
	owner.do(t, "", control.Request{Op: control.OpApproval, Network: "lan", Approval: false})
	guesser.do(t, control.CodeWrongPassword, control.Request{Op: control.OpJoin, Network: "lan"})

	// A network with neither a password nor approval that is not open takes no joins.
	owner.do(t, "", control.Request{Op: control.OpCreate, Network: "keysonly", Approval: true})
	if err := srv.cfg.Store.SetApproval(context.Background(), "keysonly", false); err != nil {
		t.Fatal(err)
	}
	guesser.do(t, control.CodeClosed, control.Request{Op: control.OpJoin, Network: "keysonly"})
}
