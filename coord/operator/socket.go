package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/warren-net/warren/coord/operatorapi"
	"github.com/warren-net/warren/coord/store"
)

// Socket serves a Commands on the admin socket of a data directory: a unix socket, mode 0600, in a
// directory that only its owner may write, answering only callers with the server's uid (where the
// system tells, see peerUID). It is removed on Close.
type Socket struct {
	cmds *Commands
	log  hclog.Logger
	path string
	ln   net.Listener
	srv  *http.Server
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// requestTimeout bounds one operation.
const requestTimeout = 30 * time.Second

// Listen checks dataDir's permissions, clears a stale socket left by a crashed server, and serves a
// on dataDir/operatorapi.SocketName. It fails if another server answers there.
func Listen(dataDir string, a *Commands, log hclog.Logger) (*Socket, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := CheckDir(dataDir); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, operatorapi.SocketName)
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("admin socket: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket: another warren-coord is serving data directory %s", dataDir)
		}
		if err := os.Remove(path); err != nil { // stale, from a server that crashed
			return nil, fmt.Errorf("admin socket: remove stale %s: %w", path, err)
		}
		log.Info("removed a stale admin socket", "path", path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		if len(path) >= 104 { // sun_path: 108 bytes on Linux, 104 on BSDs and macOS
			return nil, fmt.Errorf("admin socket %s: %w (the path is %d bytes, too long for a unix socket: use a shorter --data)", path, err, len(path))
		}
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // Close removes it, after the server stopped
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	s := &Socket{cmds: a, log: log, path: path, ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+operatorapi.Path, s.handle)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: requestTimeout + 10*time.Second, ErrorLog: log.StandardLogger(nil),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, uidKey{}, peerUID(c))
		}}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Path returns the socket's path.
func (s *Socket) Path() string { return s.path }

// Close stops serving, waits for requests in flight (a few seconds at most) and removes the socket.
// Idempotent.
func (s *Socket) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Socket) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.done
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

type uidKey struct{}

// CheckDir refuses a data directory that other users could write to (and so replace the socket in)
// or that belongs to another user.
func CheckDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	if modeBits && fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("data directory %s is writable by other users (mode %v); chmod 700 it", dir, fi.Mode().Perm())
	}
	if uid, ok := ownerUID(fi); ok && uid != os.Getuid() {
		return fmt.Errorf("data directory %s belongs to uid %d, not to this user (uid %d)", dir, uid, os.Getuid())
	}
	return nil
}

func (s *Socket) handle(w http.ResponseWriter, r *http.Request) {
	if r.Host != operatorapi.Host {
		writeReply(w, http.StatusForbidden, operatorapi.Reply{Error: "forbidden host", Code: operatorapi.CodeForbidden})
		return
	}
	uid := -1
	if v, ok := r.Context().Value(uidKey{}).(int); ok {
		uid = v
	}
	if uid >= 0 && uid != os.Getuid() {
		s.log.Warn("operator request refused: caller is another user", "uid", uid)
		writeReply(w, http.StatusForbidden, operatorapi.Reply{Error: "only the server's own user may use its admin socket", Code: operatorapi.CodeForbidden})
		return
	}
	req, err := operatorapi.DecodeRequest(r.Body)
	if err != nil {
		writeReply(w, http.StatusBadRequest, operatorapi.Reply{Error: err.Error(), Code: operatorapi.CodeInvalid})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	res, err := s.cmds.Do(ctx, store.OperatorActor(uid), req)
	if err != nil {
		var aerr *operatorapi.Error
		if errors.As(err, &aerr) {
			writeReply(w, http.StatusConflict, operatorapi.Reply{Error: aerr.Message, Code: aerr.Code})
			return
		}
		s.log.Error("operator request failed", "op", req.Op, "error", err)
		writeReply(w, http.StatusInternalServerError, operatorapi.Reply{Error: string(req.Op) + ": " + err.Error(), Code: operatorapi.CodeInternal})
		return
	}
	data, err := json.Marshal(res)
	if err != nil {
		writeReply(w, http.StatusInternalServerError, operatorapi.Reply{Error: err.Error(), Code: operatorapi.CodeInternal})
		return
	}
	writeReply(w, http.StatusOK, operatorapi.Reply{Result: data})
}

func writeReply(w http.ResponseWriter, code int, rep operatorapi.Reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(rep)
}
