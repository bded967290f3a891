package webui

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServer serves a page end to end over a real loopback socket: the page and its assets with
// the secret, nothing without it, the API behind the guard.
func TestServer(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			var v struct{ Op string }
			if err := ReadJSON(r.Body, &v); err != nil {
				WriteError(w, http.StatusBadRequest, err.Error())
				return
			}
			WriteJSON(w, 200, v)
			return
		}
		WriteJSON(w, 200, map[string]string{"path": r.URL.Path})
	})
	s, err := Start("127.0.0.1:0", NodePage, api)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	get := func(url string) (int, string, http.Header) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	u := s.URL()
	if code, body, _ := get(u); code != 200 || !strings.Contains(body, `src="node.js"`) || strings.Contains(body, "<script>") {
		t.Errorf("page: %d %q", code, body)
	}
	for _, a := range []string{"node.js", "common.js", "style.css"} {
		if code, body, h := get(u + a); code != 200 || len(body) < 100 || h.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %d, %d bytes", a, code, len(body))
		}
	}
	if code, _, _ := get(u + "coord.js"); code != 404 {
		t.Errorf("the other page's script: %d, want 404", code)
	}
	if code, body, _ := get(u + "api/status"); code != 200 || !strings.Contains(body, `"/api/status"`) {
		t.Errorf("api: %d %s", code, body)
	}
	base := strings.TrimSuffix(u, "/")
	base = base[:strings.LastIndex(base, "/")]
	if code, _, _ := get(base + "/"); code != 404 {
		t.Errorf("page without secret: %d", code)
	}
	post := func(body string) int {
		req, _ := http.NewRequest("POST", u+"api/join", bytes.NewBufferString(body))
		req.Header.Set("Origin", base)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(TokenHeader, strings.Split(u, "/")[3])
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post(`{"Op":"approve"}`); c != 200 {
		t.Errorf("post: %d", c)
	}
	for _, bad := range []string{`{"Op":"approve","x":1}`, `{"Op":"a"}{}`, `{"Op":"` + strings.Repeat("a", MaxBody) + `"}`, `[`} {
		if c := post(bad); c != 400 {
			t.Errorf("post %.40q: %d, want 400", bad, c)
		}
	}
}

func FuzzReadJSON(f *testing.F) {
	f.Add([]byte(`{"op":"approve","network":"n","key":"SHA256:x"}`))
	f.Add([]byte(`{}{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v struct {
			Op, Network, Key string
		}
		if ReadJSON(bytes.NewReader(b), &v) == nil && len(v.Op)+len(v.Network)+len(v.Key) > MaxBody {
			t.Fatalf("accepted %d bytes of strings", len(v.Op)+len(v.Network)+len(v.Key))
		}
	})
}
