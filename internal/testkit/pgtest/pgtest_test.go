package pgtest

import (
	"strings"
	"testing"
)

func TestStart(t *testing.T) {
	s := Start(t)
	url := s.NewDatabase(t)
	if !strings.Contains(url, "/t1?") {
		t.Fatalf("URL %s", url)
	}
	out, err := s.Exec("t1", "CREATE TABLE x (v int); INSERT INTO x VALUES (41); SELECT v + 1 FROM x")
	if err != nil || out != "42" {
		t.Fatalf("query: %q, %v", out, err)
	}
}
