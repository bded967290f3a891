package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/warren-net/warren/node/localapi"
)

// fakeNode answers the page's calls as a node would.
type fakeNode struct {
	owner []localapi.OwnerRequest
	err   error
}

func (f *fakeNode) Status(context.Context) (*localapi.Status, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &localapi.Status{Self: localapi.Self{Name: "alice"}}, nil
}

func (f *fakeNode) Owner(_ context.Context, req localapi.OwnerRequest) (*localapi.OwnerReply, error) {
	f.owner = append(f.owner, req)
	return &localapi.OwnerReply{}, f.err
}

func TestWebAPI(t *testing.T) {
	call := func(f *fakeNode, method, path, body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		webAPI(f).ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w
	}
	f := &fakeNode{}
	if w := call(f, "GET", "/api/status", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"name":"alice"`) {
		t.Errorf("status: %d %s", w.Code, w.Body)
	}
	if w := call(f, "POST", "/api/join", `{"op":"approve","network":"club","key":"SHA256:abc"}`); w.Code != 200 ||
		len(f.owner) != 1 || f.owner[0] != (localapi.OwnerRequest{Op: "approve", Network: "club", Target: "SHA256:abc"}) {
		t.Errorf("approve: %d %s, node got %+v", w.Code, w.Body, f.owner)
	}
	f.owner = nil
	for _, body := range []string{
		`{"op":"kick","network":"club","key":"k"}`, // only approve and deny
		`{"op":"deny","network":"","key":"k"}`,
		`{"op":"deny","network":"club"}`,
		`{"op":"deny","network":"club","key":"k","all":true}`, // unknown field
		`{"op":"deny","network":"` + strings.Repeat("n", 300) + `","key":"k"}`,
	} {
		if w := call(f, "POST", "/api/join", body); w.Code != http.StatusBadRequest {
			t.Errorf("%.60s: %d, want 400", body, w.Code)
		}
	}
	if len(f.owner) != 0 {
		t.Errorf("refused requests reached the node: %+v", f.owner)
	}
	if w := call(f, "GET", "/api/join", ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET api/join: %d, want 405", w.Code)
	}
	f.err = &localapi.Error{Code: "not_owner", Message: `only the owner of network "club" can approve`}
	if w := call(f, "POST", "/api/join", `{"op":"deny","network":"club","key":"k"}`); w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "only the owner") {
		t.Errorf("refusal: %d %s", w.Code, w.Body)
	}
	f.err = localapi.ErrNotRunning
	if w := call(f, "GET", "/api/status", ""); w.Code != http.StatusServiceUnavailable {
		t.Errorf("node gone: %d", w.Code)
	}
}
