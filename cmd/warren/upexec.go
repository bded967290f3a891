package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/node"
	"github.com/warren-net/warren/node/localapi"
)

// exitCode is returned by a command that wants warren to exit with this status and print nothing
// (it already did, e.g. the command run by 'warren up -- CMD').
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// splitCommand splits 'up' arguments at the first "--": flags before it, the command to run after.
func splitCommand(args []string) (flags, command []string) {
	if i := slices.Index(args, "--"); i >= 0 {
		return args[:i], args[i+1:]
	}
	return args, nil
}

// authKey returns the auth key from --authkey, else the file named by --authkey-file, else
// WARREN_AUTHKEY; "" if none is given.
func authKey(flagValue, file string) (string, error) {
	key := flagValue
	if key == "" && file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--authkey-file: %w", err)
		}
		key = strings.TrimSpace(string(b))
		if key == "" {
			return "", fmt.Errorf("--authkey-file %s is empty", file)
		}
	}
	if key == "" {
		key = strings.TrimSpace(os.Getenv("WARREN_AUTHKEY"))
	}
	return key, nil
}

// runUntilDone keeps the started node n up until a signal (ctx), `warren down` or a fatal error
// (n.Stopped) — or, if command is set, until that command exits. Then it closes the node, which logs
// an ephemeral node out. With a command, warren exits with the command's status (128+N if signal N
// killed it, as a shell does), and the command gets SIGTERM if warren dies first (Linux).
func runUntilDone(ctx context.Context, n *node.Node, log hclog.Logger, state string, command []string) error {
	if len(command) == 0 {
		select {
		case <-ctx.Done():
		case <-n.Stopped():
		}
		log.Info("shutting down")
		cerr := n.Close()
		if err := n.Err(); err != nil {
			return err
		}
		return cerr
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = commandEnv(os.Environ(), state, n.Status())
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		n.Close()
		return fmt.Errorf("run %s: %w", command[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = stopCommand(cmd, done)
	case <-n.Stopped():
		err = stopCommand(cmd, done)
	}
	log.Info("command finished; shutting down", "command", command[0], "status", err)
	cerr := n.Close()
	if ferr := n.Err(); ferr != nil {
		return ferr
	}
	if ps := cmd.ProcessState; ps != nil && !ps.Success() {
		return exitStatus(command[0], ps, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", command[0], err)
	}
	return cerr
}

// exitStatus turns the command's end into warren's: its exit code, or 128+N if signal N killed it.
func exitStatus(name string, ps *os.ProcessState, err error) error {
	if ps == nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitCode(128 + int(ws.Signal()))
	}
	if c := ps.ExitCode(); c != 0 {
		return exitCode(c)
	}
	return nil
}

// stopCommand asks the command to terminate, and kills it if it has not after 10 seconds, or at once
// where there is no SIGTERM (Windows).
func stopCommand(cmd *exec.Cmd, done <-chan error) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		cmd.Process.Kill()
	}
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		return <-done
	}
}

// commandEnv is the environment of 'warren up -- COMMAND': the caller's, without the auth key, plus
// ALL_PROXY (honoured by curl and many other tools) and WARREN_PROXY pointing at the node's proxy,
// and WARREN_STATE naming its state directory (the default --state of warren commands).
func commandEnv(environ []string, state string, st localapi.Status) []string {
	env := slices.DeleteFunc(withoutSysmonAwake(environ), func(kv string) bool {
		return strings.HasPrefix(kv, "WARREN_AUTHKEY=") || strings.HasPrefix(kv, "WARREN_STATE=")
	})
	env = append(env, "WARREN_STATE="+state)
	if st.Self.SOCKS != "" {
		env = append(env, "ALL_PROXY=socks5h://"+st.Self.SOCKS, "WARREN_PROXY="+st.Self.SOCKS)
	}
	return env
}
