package pgtest

import "testing"

// Server is a running throwaway PostgreSQL; not on Windows.
type Server struct{}

// BinDir returns "": Debian's PostgreSQL layout does not exist on Windows.
func BinDir() string { return "" }

// Start skips the test: the throwaway server runs on Linux (and other Unix systems) only.
func Start(tb testing.TB) *Server {
	tb.Skip("pgtest: no throwaway PostgreSQL on Windows")
	return nil
}

// URL returns "".
func (s *Server) URL(db string) string { return "" }

// NewDatabase is never reached (Start skips).
func (s *Server) NewDatabase(tb testing.TB) string { tb.Skip("pgtest: not on Windows"); return "" }

// Exec is never reached (Start skips).
func (s *Server) Exec(db, sql string) (string, error) { return "", nil }

// Log returns "".
func (s *Server) Log() string { return "" }
