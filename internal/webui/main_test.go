package webui

import (
	"testing"

	"github.com/warren-net/warren/internal/testkit"
)

// TestMain fails the run if a page server leaves a goroutine behind.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
