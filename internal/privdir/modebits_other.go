//go:build !windows

package privdir

// modeBits reports whether file mode bits say who may write a directory (Check relies on them).
const modeBits = true
