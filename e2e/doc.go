// Package e2e holds warren's end-to-end tests: a coordination server and several nodes in one process
// (inprocess_test.go), and the built binaries driven as a user would drive them (process_test.go).
// It has no non-test code.
package e2e
